"""`ssl-zoo eval <run dir> [eval.<key>=<value> ...]` (or run_dir=<path>): offline probes of a run's newest
checkpoint."""

from __future__ import annotations

from pathlib import Path


def _pct(value) -> float:
    return float("nan") if value is None else value  # a diverged linear evaluation has no accuracy


def _row(name: str, r: dict) -> str:
    return (f"{name:<24}{r['knn_top1']:>10.2f}{_pct(r['linear_top1']):>14.2f}{_pct(r.get('linear_top5')):>14.2f}"
            f"{r.get('dim', 0):>7d}")


def _config_value(run_dir: Path, key: str):
    from omegaconf import OmegaConf

    from ssl_zoo.runs.config_file import unchecked_config

    try:
        return OmegaConf.select(unchecked_config(run_dir), key)
    except Exception:  # no config, or an unreadable one: reported by the commands that need it
        return None


def _length(run_dir: Path, r: dict) -> str:
    """'N steps' for a run the user sized in optimizer steps (trainer.steps), else 'N epochs'."""
    steps = _config_value(run_dir, "trainer.steps")
    return f"{steps} steps" if steps is not None else f"{r.get('epochs')} epochs"


def _knn_grid(sweep: dict[str, float]) -> list[str]:
    cells = [dict(part.split("=") for part in key.split(",")) | {"acc": acc} for key, acc in sweep.items()]
    ks = sorted({int(c["k"]) for c in cells})
    ts = sorted({float(c["T"]) for c in cells})
    acc = {(int(c["k"]), float(c["T"])): c["acc"] for c in cells}
    lines = [f"{'':<10}" + "".join(f"{'k=' + str(k):>9}" for k in ks)]
    for t in ts:
        lines.append(f"{'T=' + format(t, 'g'):<10}" + "".join(f"{acc.get((k, t), float('nan')):>9.2f}" for k in ks))
    return lines


def format_results(run_dir: Path, r: dict) -> str:
    """The table `ssl-zoo eval` and `ssl-zoo train` print."""
    from ssl_zoo.commands.collapse_summary import collapse_lines
    from ssl_zoo.launch.run_eval import ONLINE_PROBE_NOTE

    lines = [f"run: {run_dir}",
             f"{r.get('method')} / {r.get('ablation')} / {r.get('data')} / {r.get('encoder')}, "
             f"{_length(run_dir, r)}, seed {r.get('seed')}: {r.get('status')}"]
    if r.get("status") == "unfinished":
        lines.append(f"  unfinished run: evaluated its latest checkpoint (epoch {r.get('epochs_done')} of "
                     f"{r.get('epochs')}, step {r.get('evaluated_step')}/{r.get('total_steps')}); "
                     "`ssl-zoo train` with the same config resumes it")
    lines += collapse_lines(r, _config_value(run_dir, "method.head.num_prototypes"))  # K: DINO's teacher entropy
    if "knn_top1" not in r:
        lines.append("  no probe results (eval.enabled=false); run `ssl-zoo eval <run dir>`")
        return "\n".join(lines)
    lines.append(f"{'offline probes':<24}{'kNN top-1':>10}{'linear top-1':>14}{'linear top-5':>14}{'dim':>7}")
    lines.append(_row("trained", r))
    if "projector" in r:
        lines.append(_row("trained (projector out)", r["projector"]))
    for name in ("random_init", "raw_pixels"):
        if name in r:
            lines.append(_row(name, r[name]))
    if "online_probe_acc" in r:
        lines.append(f"online probe top-1 (last epoch): {r['online_probe_acc']:.2f}   [{ONLINE_PROBE_NOTE}]")
    for key, ft in (r.get("finetune") or {}).items():  # eval.protocol=finetune (ssl_zoo/evaluation/finetune.py)
        score = "diverged" if ft.get("top1") is None else f"top-1 {ft['top1']:.2f}, top-5 {ft['top5']:.2f}"
        lines.append(f"fine-tuned on {key} of the labels ({ft['n_labels']} images, {ft.get('steps')} steps): {score}")
    sgd = r.get("linear_sgd")
    if sgd:  # eval.protocol=sgd (ssl_zoo/evaluation/linear_sgd.py)
        score = "diverged" if sgd.get("top1") is None else f"top-1 {sgd['top1']:.2f}"
        lines.append(f"linear top-1 above: eval.protocol=sgd, a linear classifier on the frozen backbone trained "
                     f"{sgd['epochs']} epochs on crop + flip views of {sgd['n_train']} images (SGD lr {sgd['lr']:g}, "
                     f"batch {sgd['batch_size']}, cosine, no weight decay): {score}; the L-BFGS probe on "
                     f"centre-crop features gives {r['linear_lbfgs']['top1']:.2f}")
    lin = r.get("linear", {})
    if lin:
        lines.append(f"linear probe: L-BFGS logistic regression on standardised features; weight decay {lin['wd']:g} "
                     f"(fit on {lin['n_sweep_fit']}) chosen on {lin['n_val']} held-out train images (val top-1 "
                     f"{lin['val_top1']:.2f}), refit on all {lin['n_train']} (weight decay "
                     f"{lin.get('refit_wd', lin['wd']):.2g}: the same strength per image sum)")
    if "knn_sweep" in r:
        lines.append(f"kNN top-1 of the trained backbone (cosine, votes exp(sim/T)); the kNN column above is "
                     f"k={r.get('knn_k', '?')}, T={r.get('knn_t', '?')} (eval.knn_k / eval.knn_t):")
        lines += ["  " + line for line in _knn_grid(r["knn_sweep"])]
    wall, ev = r.get("wall_s", 0.0), r.get("eval_s", 0.0)
    share = f" ({100 * ev / wall:.1f}% of pretraining)" if wall else ""
    lines.append(f"pretraining {wall:.0f} s at {r.get('images_per_s', 0):.0f} images/s; evaluation {ev:.0f} s{share}")
    return "\n".join(lines)


def run(args) -> int:
    from ssl_zoo.commands.folders import one_folder
    from ssl_zoo.launch.run_eval import evaluate_run_dir

    path, overrides = one_folder(args.overrides, "eval", "run directory")
    run_dir = Path(path).expanduser()
    results = evaluate_run_dir(run_dir, overrides)
    print(format_results(run_dir, results), flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="kNN and linear probes of a run's newest checkpoint (written to results.json)")
    p.add_argument("overrides", nargs="*", help="the run directory (or run_dir=<path>), optionally eval.<key>=<value> and device=<value>")
    p.set_defaults(func=run)
