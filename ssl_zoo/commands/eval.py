"""`ssl-zoo eval <run dir> [eval.<key>=<value> ...]` (or run_dir=<path>): offline probes of a run's newest
checkpoint."""

from __future__ import annotations

from pathlib import Path


def _cell(value, width: int) -> str:
    """A percentage, 'diverged' for a linear evaluation that diverged (null), '–' where it was not run."""
    if value == "missing":
        return f"{'–':>{width}}"
    return f"{'diverged' if value is None else format(value, '.2f'):>{width}}"


def _probe_columns(r: dict) -> list[tuple[str, str]]:
    """(header, results key) of the table's columns: each header names its protocol, so an SGD number never
    stands in the L-BFGS probe's column (results_file reads older files into the same keys)."""
    columns = [("kNN top-1", "knn_top1"), ("linear (L-BFGS) top-1", "linear_top1"), ("top-5", "linear_top5")]
    sgd = r.get("linear_sgd")
    if isinstance(sgd, dict):
        columns += [(f"linear (SGD, {sgd.get('epochs')} ep) top-1", "linear_sgd_top1"), ("top-5", "linear_sgd_top5")]
    return columns


def _probe_table(r: dict) -> list[str]:
    """The offline probes of the trained backbone, its projector output and the baselines, one row each; a
    protocol a row was not scored with is '–' (the SGD evaluation runs on backbones only)."""
    columns = _probe_columns(r)
    widths = [max(len(header), 8) + 2 for header, _ in columns]
    rows = [("trained", r), ("trained (projector out)", r.get("projector")),
            *((name, r.get(name)) for name in ("random_init", "raw_pixels"))]
    lines = [f"{'offline probes':<24}" + "".join(f"{h:>{w}}" for (h, _), w in zip(columns, widths)) + f"{'dim':>7}"]
    for name, part in rows:
        if isinstance(part, dict):
            cells = "".join(_cell(part.get(key, "missing"), w) for (_, key), w in zip(columns, widths))
            lines.append(f"{name:<24}{cells}{part.get('dim', 0):>7d}")
    return lines


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
    lines += _probe_table(r)
    if "online_probe_acc" in r:
        lines.append(f"online probe top-1 (last epoch): {r['online_probe_acc']:.2f}   [{ONLINE_PROBE_NOTE}]")
    for key, ft in (r.get("finetune") or {}).items():  # eval.protocol=finetune (ssl_zoo/evaluation/finetune.py)
        score = "diverged" if ft.get("top1") is None else f"top-1 {ft['top1']:.2f}, top-5 {ft['top5']:.2f}"
        lines.append(f"fine-tuned on {key} of the labels ({ft['n_labels']} images, {ft.get('steps')} steps): {score}")
    lin = r.get("linear", {})
    if lin:
        lines.append(f"linear (L-BFGS): logistic regression on standardised centre-crop features; weight decay "
                     f"{lin['wd']:g} (fit on {lin['n_sweep_fit']}) chosen on {lin['n_val']} held-out train images "
                     f"(val top-1 {lin['val_top1']:.2f}), refit on all {lin['n_train']} (weight decay "
                     f"{lin.get('refit_wd', lin['wd']):.2g}: the same strength per image sum)")
    sgd = r.get("linear_sgd")
    if isinstance(sgd, dict):  # eval.protocol=sgd (ssl_zoo/evaluation/linear_sgd.py)
        features = "standardised features" if sgd.get("standardised") else "features (not standardised)"
        lines.append(f"linear (SGD, {sgd['epochs']} ep): eval.protocol=sgd, a linear classifier on the frozen "
                     f"backbone's {features} trained {sgd['epochs']} epochs ({sgd.get('steps')} steps) "
                     f"on crop + flip views of {sgd['n_train']} images (SGD lr {sgd['lr']:g} = eval.sgd.lr x batch "
                     f"{sgd['batch_size']} / 256, cosine, no weight decay); scored on centre crops")
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
