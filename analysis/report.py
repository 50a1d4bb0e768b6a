"""The collapse report of a sweep directory: results table, the papers' findings next to ours, which label-free
metric tracks the probe (analysis/metric_correlation.py), all plots, as one HTML page and the same in markdown.

Runs are gathered with analysis/results.py (every run directory below the sweep, whatever its state); the collapse
fields come from each run's results.json (`collapsed` by ssl_zoo.evaluation.monitors.COLLAPSE_RULE and the final metrics),
the curves from metrics.csv and the spectra from spectrum.npy / spectrum_backbone.npy.
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from ssl_zoo.analysis import collapse_plots, metric_correlation, predictor_plots
from ssl_zoo.analysis.compare_plots import draw, epochs_text
from ssl_zoo.analysis.predictor_claims import claims_table
from ssl_zoo.analysis.results import gather_runs, usable_metrics
from ssl_zoo.common.errors import UserError
from ssl_zoo.evaluation.monitors import COLLAPSE_RULE
from ssl_zoo.runs.atomic import atomic_write_text
from ssl_zoo.runs.config_file import config_or_problem
from ssl_zoo.runs.layout import SPECTRA
from ssl_zoo.runs.results_file import results_or_problem
from ssl_zoo.runs.spectrum_file import spectrum_or_problem
from ssl_zoo.runs.verb_output import check_output_folder, output_folder

# What the papers report (BYOL Table 5, SimSiam Tables 1-2, DINO, MoCo): (finding, collapses?), None where the
# paper states no collapse verdict (an accuracy or "unstable" only).
PAPER: dict[tuple[str, str], tuple[str, bool | None]] = {
    ("simsiam", "none"): ("learns (CIFAR-10: 91.8% linear)", False),
    ("simsiam", "no_stopgrad"): ("collapses: 0.1%, std(z/‖z‖) → 0", True),
    ("simsiam", "no_predictor"): ("collapses: 0.1%", True),
    ("simsiam", "predictor_fixed_random"): ("fails: 1.5%", True),
    ("simsiam", "no_bn_heads"): ("learns, worse: 34.6%", False),
    ("simsiam", "bn_predictor_output"): ("training unstable (no number)", None),
    ("byol", "none"): ("learns (ImageNet 74.3%)", False),
    ("byol", "no_predictor"): ("collapses: 0.2%", True),
    ("byol", "tau_zero"): ("collapses: 0.3%", True),
    ("byol", "tau_one"): ("learns something: 18.8% (random init 1.4%)", False),
    ("byol", "tau_constant"): ("learns: 72.5% at tau 0.99", False),
    ("byol", "no_bn_heads"): ("not in the reference facts (reported both ways)", None),
    ("dino", "none"): ("learns", False),
    ("dino", "no_centering"): ("collapses: one dimension dominates, entropy → 0, KL → 0", True),
    ("dino", "no_sharpening"): ("collapses: uniform output, entropy → log K, KL → 0", True),
    ("dino", "center_momentum_0999"): ("collapses", True),
    ("mocov2", "none"): ("learns", False),
    ("mocov2", "tau_zero"): ("m = 0 fails to train (loss oscillates); no collapse verdict", None),
    ("vicreg", "none"): ("learns (ImageNet 73.2%)", False),
    ("vicreg", "no_variance"): ("collapses without the variance term (Table 4)", True),
    ("vicreg", "no_covariance"): ("learns, worse (Table 4): correlated dimensions, no complete collapse", False),
    ("swav", "none"): ("learns (ImageNet 75.3% with multi-crop)", False),
    ("swav", "no_sinkhorn"): ("collapses: without equipartition every image takes one prototype", True),
    ("swav", "no_queue"): ("learns; the queue matters only when the batch is small for the prototypes", False),
    ("barlow", "none"): ("learns (ImageNet 73.2%)", False),
    ("barlow", "no_redundancy"): ("learns, worse: 57.3% vs 71.4% with the invariance term only (Table 3)", False),
    # Tian, Chen & Ganguli 2021 and its ReScience C 2022 reproduction (CIFAR-10, BYOL)
    ("byol", "predictor_linear"): ("learns with a trained linear predictor (CIFAR-10: 84.2%)", False),
    ("byol", "predictor_directpred"): ("learns, as a trained linear predictor does (CIFAR-10: 83.3%)", False),
    ("byol", "predictor_linear_no_wd"): ("alignment of W_p with F weaker or slower (no number)", None),
    ("byol", "predictor_linear_lr_x10"): ("a higher predictor lr helps (no number)", None),
    ("simsiam", "predictor_directpred"): ("learns (DirectPred also trains SimSiam)", False),
    ("simsiam", "predictor_linear"): ("a symmetric linear predictor without EMA collapses unless its lr and weight "
                                      "decay exceed the encoder's (ReScience); unconstrained: no verdict", None),
}

FINAL = ["z_std", "z_std_ref", "effective_rank", "backbone_z_std", "backbone_z_std_ref", "backbone_effective_rank",
         "alignment", "uniformity", "backbone_alignment", "backbone_uniformity", "alpha_req", "backbone_alpha_req",
         "lidar", "backbone_lidar", "teacher_entropy",
         "kl_teacher_student", "collapse_reason"]
PLOTS = [("collapse_heatmap.png", "Linear top-1 per method and ablation, collapsed runs boxed"),
         ("collapse_z_std.png", "z_std per epoch with the healthy 1/√d"),
         ("collapse_effective_rank.png", "Effective rank (RankMe) per epoch"),
         ("collapse_spectra.png", "Final covariance spectra"),
         ("collapse_dino.png", "DINO teacher entropy and KL(teacher‖student)"),
         ("predictor_alignment.png", "Linear predictor: alignment of W_p with F and asymmetry per epoch")]
TRACKS = ("metric_vs_probe.png", "Label-free metrics at the final epoch vs linear top-1")


def _results(run_dir: str) -> dict:
    """results.json when usable (an unusable one is already named by gather_runs), else {}."""
    return results_or_problem(Path(run_dir))[0] or {}


def _num_outputs(run_dir: str) -> float:
    k = _config_value(run_dir, "method.head.num_prototypes")
    return float(k) if isinstance(k, int) and not isinstance(k, bool) and k > 1 else float("nan")


def load_study(sweep_dir: Path, skipped: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, per-epoch metrics, final spectra) of every run below sweep_dir; files that could not be used are
    named in `skipped`."""
    skipped = [] if skipped is None else skipped
    runs = gather_runs([sweep_dir], skipped)
    runs = runs.dropna(subset=["method"]).copy()
    runs["ablation"] = runs["ablation"].fillna("none")
    extra = pd.DataFrame([{k: _results(d).get(k) for k in FINAL} for d in runs["run_dir"]], index=runs.index,
                         columns=FINAL)
    for column in FINAL[:-1]:  # numbers (a hand-edited value that is not one is left out)
        extra[column] = pd.to_numeric(extra[column], errors="coerce")
    runs = pd.concat([runs, extra], axis=1)
    runs["num_outputs"] = [_num_outputs(d) for d in runs["run_dir"]]
    frames, spectra, images = [], [], []
    for run in runs.itertuples():
        m = usable_metrics(Path(run.run_dir))
        if m is not None:
            frames.append(m.assign(method=run.method, ablation=run.ablation, seed=run.seed, run_dir=run.run_dir))
        n = _results(run.run_dir).get("monitor_images")
        for prefix in SPECTRA:
            ev, problem = spectrum_or_problem(Path(run.run_dir), prefix)
            if ev is None:
                skipped += [problem] if problem else []
                continue
            ev, cut = sample_limited(ev, _dim(m, prefix))
            n = n or cut
            ev = np.clip(ev, 0, None)
            ev = ev / max(ev.sum(), 1e-30)
            spectra.append(pd.DataFrame({"k": np.arange(1, len(ev) + 1), "eigenvalue": np.maximum(ev, 1e-12),
                                         "method": run.method, "ablation": run.ablation, "seed": run.seed,
                                         "embedding": collapse_plots.EMBEDDINGS[prefix], "cut_at": cut}))
        images.append(n or _config_value(run.run_dir, "monitor.num_images"))
    runs["monitor_images"] = images
    metrics = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return runs, metrics, (pd.concat(spectra, ignore_index=True) if spectra else pd.DataFrame())


def sample_limited(ev: np.ndarray, dim: int | None) -> tuple[np.ndarray, int | None]:
    """(the spectrum without its sample-size artefact, the number of monitor images when it had one).

    The spectrum has min(n, d) values for n monitor images and d dimensions. With n < d (digits: 450 test images,
    a 2048-d backbone) the centred covariance has rank n - 1 at most: its last value is 0 whatever the model did,
    a drop that is not a collapse. Such spectra end at k = n - 1."""
    if dim is None or len(ev) >= dim or len(ev) < 2:
        return ev, None
    return ev[: len(ev) - 1], len(ev)


def _dim(metrics: pd.DataFrame | None, prefix: str) -> int | None:
    """The embedding dimension d, from the logged healthy z_std 1/sqrt(d)."""
    column = f"{prefix}z_std_ref"
    if metrics is None or column not in metrics:
        return None
    healthy = metrics[column][(metrics[column] > 0) & (metrics[column] <= 1)]  # 1/sqrt(d) for some d >= 1
    return round(float(healthy.iloc[-1]) ** -2) if len(healthy) else None


def _config_value(run_dir: str, key: str):
    cfg = config_or_problem(Path(run_dir))[0]  # an unusable config is already named by gather_runs
    try:
        return OmegaConf.select(cfg, key, default=None) if cfg is not None else None
    except Exception:  # an interpolation that does not resolve: the value is unknown
        return None


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    return f"{v:.{digits}f}" if isinstance(v, float | int | np.floating) else str(v)


def _order(method: str, ablation: str) -> tuple:
    """Methods alphabetically, each with its default (`none`) first."""
    return (str(method), ablation != "none", str(ablation))


def results_table(runs: pd.DataFrame) -> pd.DataFrame:
    def entropy(r) -> str:
        h, k = r.teacher_entropy, r.num_outputs
        return "–" if h is None or h != h else f"{h:.2f} ({h / math.log(k):.2f} log K)" if k == k else f"{h:.2f}"

    return pd.DataFrame({
        "method": runs["method"], "ablation": runs["ablation"], "seed": runs["seed"].astype("Int64"),
        "status": runs["status"], "epochs": runs["epochs_done"].astype("Int64"),
        "linear (L-BFGS) top-1": [_fmt(v, 1) for v in runs["linear_top1"]], "kNN top-1": [_fmt(v, 1) for v in runs["knn_top1"]],
        "z_std (proj)": [_fmt(v) for v in runs["z_std"]], "1/√d": [_fmt(v) for v in runs["z_std_ref"]],
        "eff. rank (proj)": [_fmt(v, 1) for v in runs["effective_rank"]],
        "z_std (backbone)": [_fmt(v) for v in runs["backbone_z_std"]],
        "eff. rank (backbone)": [_fmt(v, 1) for v in runs["backbone_effective_rank"]],
        "align.": [_fmt(v, 2) for v in runs["alignment"]], "unif.": [_fmt(v, 2) for v in runs["uniformity"]],
        "teacher entropy": [entropy(r) for r in runs.itertuples()],
        "KL(t‖s)": [_fmt(v, 3) for v in runs["kl_teacher_student"]],
        "collapsed": [_fmt(v) if v == v else "–" for v in runs["collapsed"]],
        "why": [r if isinstance(r, str) and r else "" for r in runs["collapse_reason"]],
    })


def paper_table(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Paper finding vs ours per (method, ablation), and one plain sentence per disagreement. A paper failure
    (collapse or near-chance accuracy) counts as partly reproduced when our run does not collapse by the rule but
    its backbone probes below the same encoder at random init: it failed to learn, without a collapsed output."""
    rows, differs = [], []
    done = runs[runs["status"] == "finished"]
    base = done[done["ablation"] == "none"].groupby("method")["linear_top1"].mean()
    random_init = collapse_plots.random_init_linear(done)
    for (method, ablation), group in sorted(done.groupby(["method", "ablation"]), key=lambda kv: _order(*kv[0])):
        finding, expected = PAPER.get((method, ablation), ("not in the reference facts", None))
        frac = float(pd.to_numeric(group["collapsed"], errors="coerce").mean())  # nan: no run has a verdict
        collapsed = frac >= 0.5
        ours = "collapsed" if collapsed else "no collapse" if frac == frac else "no collapse verdict"
        acc = group["linear_top1"].mean()
        delta = acc - base.get(method, float("nan"))
        below_random = acc < random_init
        ratio = (group["z_std"] / group["z_std_ref"]).mean()
        h = (group["teacher_entropy"].astype(float) / np.log(group["num_outputs"].astype(float))).mean()
        here = (f"{ours}; z_std {ratio:.2f} × 1/√d" + (f"; teacher entropy {h:.2f} log K" if h == h else "")
                + (f"; linear {acc:.1f}%" if acc == acc else "; no probes (eval.enabled=false)")
                + (f" ({delta:+.1f} vs none)" if ablation != "none" and delta == delta else "")
                + (" — below random init" if below_random else ""))
        z = group["z_std"].mean()
        if expected is None or frac != frac:
            agree = "–"
        elif collapsed == expected:
            agree = "yes"
        elif expected and below_random:
            agree = "partly"
            differs.append(f"{method}/{ablation}: the paper reports \"{finding}\"; here it failed to learn (linear "
                           f"{acc:.1f}% < {random_init:.1f}% at random init) but its output did not collapse by the "
                           f"rule (z_std {z:.3f}).")
        else:
            agree = "**no**"
            differs.append(f"{method}/{ablation}: the paper reports \"{finding}\"; here it "
                           f"{'did not collapse' if expected else 'collapsed'} (z_std {z:.3f}"
                           + (f", linear {acc:.1f}%)." if acc == acc else ")."))
        rows.append({"method": method, "ablation": ablation, "paper": finding, "here": here, "agrees": agree})
    return pd.DataFrame(rows, columns=["method", "ablation", "paper", "here", "agrees"]), differs


def _settings(runs: pd.DataFrame) -> str:
    if runs.empty:
        return ""
    d = runs["run_dir"].iloc[0]
    epochs = _config_value(d, "trainer.epochs")
    return (f"data {_config_value(d, 'data.name')} (train_subset {_config_value(d, 'data.train_subset')}), "
            f"encoder {_config_value(d, 'encoder.name')} (width {_config_value(d, 'encoder.width')}), "
            f"{epochs_text(epochs) if isinstance(epochs, int) else '? epochs'}, "
            f"batch {_config_value(d, 'trainer.batch_size')}, monitor on {_images(runs)} held-out test images")


def _images(runs: pd.DataFrame) -> str:
    values = pd.to_numeric(runs.get("monitor_images", pd.Series(dtype=float)), errors="coerce").dropna()
    counts = sorted({int(n) for n in values if n >= 0})
    return "/".join(map(str, counts)) or "?"


def write_report(sweep_dir: Path, out_dir: Path, skipped: list[str] | None = None) -> tuple[Path, Path]:
    """Writes report.md, report.html, collapse_runs.csv and the PNGs into out_dir; returns (md, html) paths.
    Everything is read and the tables are made before the first file is written; files that could not be used
    (and plots that could not be drawn from them) are named in `skipped`."""
    skipped = [] if skipped is None else skipped
    runs, metrics, spectra = load_study(sweep_dir, skipped)
    runs = runs.iloc[sorted(range(len(runs)), key=lambda i: (*_order(runs["method"].iloc[i], runs["ablation"].iloc[i]),
                                                             runs["seed"].iloc[i]))]
    table = results_table(runs)
    paper, differs = paper_table(runs)
    tracks, final, correlations = metric_correlation.section(runs)
    claims = claims_table(runs, metrics)  # the predictor study's paper claims (empty without its runs)
    out_dir = output_folder(out_dir, "--out")
    drawn = {name: draw(plot, out_dir / name, skipped) for name, plot in (
        ("collapse_heatmap.png", lambda path: collapse_plots.plot_heatmap(runs, path)),
        ("collapse_z_std.png", lambda path: collapse_plots.plot_z_std(metrics, path)),
        ("collapse_effective_rank.png", lambda path: collapse_plots.plot_effective_rank(metrics, path)),
        ("collapse_spectra.png", lambda path: collapse_plots.plot_spectra(spectra, path)),
        ("collapse_dino.png", lambda path: collapse_plots.plot_dino(metrics, runs, path)),
        ("predictor_alignment.png", lambda path: predictor_plots.plot_alignment(metrics, path)),
        (TRACKS[0], lambda path: metric_correlation.plot_scatter(final, correlations, path)))}
    plots = [(name, caption) for name, caption in PLOTS if drawn.get(name)]
    tracks_plot = [TRACKS] if drawn.get(TRACKS[0]) else []
    atomic_write_text(out_dir / "collapse_runs.csv", runs.to_csv(index=False))
    wall = pd.to_numeric(runs["wall_s"], errors="coerce").sum()
    head = {"sweep": str(sweep_dir), "runs": f"{len(runs)} ({', '.join(f'{n} {s}' for s, n in runs['status'].value_counts().items())})",
            "settings": _settings(runs), "pretraining time (sum over runs)": f"{wall / 60:.1f} min",
            "written": time.strftime("%Y-%m-%d %H:%M")}
    diff_text = differs or ["none: every run with a paper verdict agrees with it."]
    md = ["# Collapse report", "", *[f"- {k}: {v}" for k, v in head.items()], "",
          f"Collapse rule: {COLLAPSE_RULE}.", "", "## Paper vs here", "", paper.to_markdown(index=False), "",
          "Where this small-scale study differs from the paper:", "", *[f"- {d}" for d in diff_text], "",
          "## Results", "", table.to_markdown(index=False), "",
          "z_std and effective rank on the held-out images at the end (projector output unless marked backbone); "
          "alignment / uniformity of the projector output on two augmented views of them; teacher entropy and "
          "KL: means over the last epoch's training steps.", "", "## Which metric tracks the probe", "", tracks,
          *[f"![{caption}]({name})\n" for name, caption in tracks_plot], *_claims_md(claims), "## Plots", ""]
    md += [f"### {caption}\n\n![{caption}]({name})\n" for name, caption in plots]
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md_path, "\n".join(md) + "\n")
    atomic_write_text(html_path, _html(head, paper, diff_text, table, plots, (correlations, tracks_plot), claims))
    return md_path, html_path


CLAIMS_TITLE = "The predictor (Tian, Chen & Ganguli 2021): paper claims"


def _claims_md(claims: pd.DataFrame) -> list[str]:
    return [] if claims.empty else [f"## {CLAIMS_TITLE}", "", claims.to_markdown(index=False), ""]


def _html(head: dict, paper: pd.DataFrame, differs: list[str], table: pd.DataFrame, plots, tracks,
          claims: pd.DataFrame) -> str:
    esc = html.escape
    correlations, tracks_plot = tracks
    tracks_body = (f"<p>{esc(metric_correlation.NOTE)}</p>"
                   + correlations.to_html(index=False, border=0, float_format=lambda v: f"{v:.3f}", na_rep="–")
                   if metric_correlation.enough(correlations) else
                   f"<p>{esc(metric_correlation.markdown(correlations))}</p>") + "".join(
        f'<figure><img src="{esc(n)}" alt="{esc(c)}"><figcaption>{esc(c)}</figcaption></figure>'
        for n, c in tracks_plot)
    items = "".join(f"<li><b>{esc(k)}</b>: {esc(str(v))}</li>" for k, v in head.items())
    figs = "".join(f'<figure><img src="{esc(n)}" alt="{esc(c)}"><figcaption>{esc(c)}</figcaption></figure>'
                   for n, c in plots)
    paper = paper.assign(agrees=paper["agrees"].str.replace("**", "", regex=False))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Collapse report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1500px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#f0f0f0}}
img{{max-width:100%;border:1px solid #ddd}}figure{{margin:1.5em 0}}figcaption{{font-weight:bold}}</style></head>
<body><h1>Collapse report</h1><ul>{items}</ul>
<p><b>Collapse rule</b>: {esc(COLLAPSE_RULE)}.</p>
<h2>Paper vs here</h2>{paper.to_html(index=False, border=0)}
<p>Where this small-scale study differs from the paper:</p><ul>{''.join(f'<li>{esc(d)}</li>' for d in differs)}</ul>
<h2>Results</h2>{table.to_html(index=False, border=0)}
<h2>Which metric tracks the probe</h2>{tracks_body}
{"" if claims.empty else f"<h2>{esc(CLAIMS_TITLE)}</h2>" + claims.to_html(index=False, border=0)}
<h2>Plots</h2>{figs}</body></html>
"""


def report(sweep_dir: str | Path, out: str | Path | None = None,
           skipped: list[str] | None = None) -> tuple[Path, Path]:
    """Writes the report; files that could not be used are named in `skipped`."""
    sweep = Path(sweep_dir).expanduser()
    if not sweep.is_dir():
        raise UserError(f"{sweep} is not a directory (give the sweep's out_dir)")
    out_dir = check_output_folder(Path(out) if out is not None else sweep / "report", "--out")
    return write_report(sweep, out_dir, skipped)
