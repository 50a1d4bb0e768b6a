"""Run directories -> pandas: one row per run (whatever its state), and a summary over seeds per setting.

A run directory is any folder holding an ssl-zoo config.yaml. Its status is results.json's (finished, diverged,
failed, or unfinished when `ssl-zoo eval` scored a checkpoint mid-run); without results.json it is unfinished
(running, stopped or crashed: metrics.csv tells how far it got). Nothing is dropped: a run that cannot be read
is listed as unreadable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ssl_zoo.common.errors import UserError
from ssl_zoo.runs.config_file import config_or_problem
from ssl_zoo.runs.discovery import find_run_dirs
from ssl_zoo.runs.identity import NON_IDENTITY_KEYS, config_hash, encoder_label
from ssl_zoo.runs.layout import CONFIG
from ssl_zoo.runs.metrics_file import metrics_or_problem
from ssl_zoo.runs.results_file import results_or_problem

SETTING = ["data", "encoder", "method", "ablation", "epochs"]  # with `variant`, what seeds are averaged over
# eval.protocol=finetune: results.json "finetune" keys -> columns (all labels, then the semi-supervised subsets)
FINETUNE = {"100%": "finetune_top1", "10%": "finetune_10pct_top1", "1%": "finetune_1pct_top1"}
METRICS = ["knn_top1", "linear_top1", "linear_top5", "proj_knn_top1", "proj_linear_top1", "random_init_knn_top1",
           "random_init_linear_top1", "online_probe_acc", "wall_s", "images_per_s", "eval_s", *FINETUNE.values()]
# eval.protocol=sgd's linear evaluation (SGD on crop + flip views) gives other numbers than the L-BFGS probe's
# linear_top1 (results_file reads older files, which held them in linear_top1, into these keys too). They are
# averaged and shown per SGD budget (linear_sgd_epochs), never in the L-BFGS probe's columns.
SGD_METRICS = ["linear_sgd_top1", "linear_sgd_top5", "random_init_linear_sgd_top1"]
RUN_COLUMNS = [*SETTING, "seed", "variant", "status", "epochs_done", *METRICS, *SGD_METRICS, "linear_sgd_epochs",
               "collapsed", "note", "run_dir"]
LBFGS, SGD = "linear (L-BFGS)", "linear (SGD, {} ep)"  # how the tables name each protocol's columns


def usable_metrics(run_dir: Path, skipped: list[str] | None = None) -> pd.DataFrame | None:
    """metrics.csv checked by ssl_zoo.runs.metrics_file; an unusable one is None and its reason goes to `skipped`."""
    df, problem = metrics_or_problem(run_dir)
    if problem and skipped is not None:
        skipped.append(problem)
    return df


def _variant(cfg: DictConfig) -> str:
    """The run's config hash with seed and length taken out: runs sharing it are seeds of one setting."""
    c = cfg.copy()
    OmegaConf.update(c, "seed", 0)
    OmegaConf.update(c, "trainer.epochs", 0)
    return config_hash(c)


def _identity(cfg: DictConfig) -> dict:
    """Flat identity keys of a config (what can tell two variants of one setting apart)."""
    flat = pd.json_normalize(OmegaConf.to_container(cfg, resolve=True), sep=".").iloc[0].to_dict()
    return {k: v for k, v in flat.items() if k.split(".")[0] not in NON_IDENTITY_KEYS
            and k not in ("seed", "trainer.epochs")}


def run_row(run_dir: Path, skipped: list[str] | None = None) -> tuple[dict, dict]:
    """(the run's table row, its flat identity config). A run whose config.yaml or results.json is unusable is
    listed as unreadable, and the reason goes to `skipped`."""
    skipped = [] if skipped is None else skipped
    row: dict = {"run_dir": str(run_dir), "note": ""}
    cfg, problem = config_or_problem(run_dir)
    try:
        if cfg is None:
            raise ValueError(problem or f"{run_dir / CONFIG}: missing")
        row.update(method=str(cfg.method.name), ablation=str(OmegaConf.select(cfg, "ablation.name", default="none")),
                   data=str(cfg.data.name), encoder=encoder_label(cfg), epochs=int(cfg.trainer.epochs),
                   seed=int(cfg.seed), variant=_variant(cfg))
        identity = _identity(cfg)
    except Exception as err:  # config_problem's keys are there, but an interpolation or odd node breaks the rest
        reason = str(err) if cfg is None else f"{run_dir / CONFIG}: {type(err).__name__}"
        skipped.append(reason)
        return {**row, "status": "unreadable", "note": reason[:200]}, {}
    metrics = usable_metrics(run_dir, skipped)
    if metrics is not None:
        row["epochs_done"] = int(metrics["epoch"].iloc[-1])
        if "online_probe_acc" in metrics and metrics["online_probe_acc"].notna().any():
            row["online_probe_acc"] = float(metrics["online_probe_acc"].dropna().iloc[-1])
        if "images_per_s" in metrics and metrics["images_per_s"].notna().any():
            row["images_per_s"] = float(metrics["images_per_s"].mean())
    res, problem = results_or_problem(run_dir)
    if problem:
        skipped.append(problem)
        return {**row, "status": "unreadable", "note": problem[:200]}, identity
    if res is None:
        done = row.get("epochs_done", 0)
        row.update(status="unfinished", note=f"no results.json; {done}/{row['epochs']} epochs in metrics.csv")
        return row, identity
    row["status"] = str(res.get("status") or "unknown")
    row.update(_length(cfg, res, row))
    for key in ("knn_top1", "linear_top1", "linear_top5", "linear_sgd_top1", "linear_sgd_top5", "online_probe_acc",
                "wall_s", "images_per_s", "eval_s", "collapsed", "epochs_done"):
        if res.get(key) is not None:
            row[key] = res[key]
    if isinstance(res.get("linear_sgd"), dict):  # the SGD budget its numbers were scored with
        row["linear_sgd_epochs"] = res["linear_sgd"].get("epochs")
    for prefix, part in (("proj_", res.get("projector") or {}), ("random_init_", res.get("random_init") or {})):
        for key in ("knn_top1", "linear_top1", "linear_sgd_top1"):
            if part.get(key) is not None:
                row[prefix + key] = part[key]
    for key, column in FINETUNE.items():
        if ((res.get("finetune") or {}).get(key) or {}).get("top1") is not None:
            row[column] = res["finetune"][key]["top1"]
    if res.get("error"):
        row["note"] = str(res["error"])[:200]
    elif row["status"] == "unfinished":
        row["note"] = f"evaluated mid-run at epoch {row.get('epochs_done', '?')}/{row['epochs']}"
    return row, identity


def _length(cfg: DictConfig, res: dict, row: dict) -> dict:
    """The epochs a run set by trainer.steps trained (trainer.epochs is then unused), as its results.json records
    them; an older results.json (which recorded trainer.epochs) is read from metrics.csv. A partial last epoch is
    said in the note."""
    if cfg.trainer.get("steps") is None:
        return {}
    steps, per_epoch, epochs = (res.get(k) for k in ("steps", "steps_per_epoch", "epochs"))
    if not all(isinstance(v, int) and v > 0 for v in (steps, per_epoch, epochs)):  # older (or hand-edited)
        return {"epochs": row["epochs_done"]} if "epochs_done" in row else {}
    last = steps - (epochs - 1) * per_epoch
    return {"epochs": epochs, "note": f"trainer.steps={steps}: last epoch partial ({last}/{per_epoch} steps)"
            if last < per_epoch else ""}


def gather_runs(paths: list[str | Path], skipped: list[str] | None = None) -> pd.DataFrame:
    """One row per run directory below the paths, with a `label` naming its setting for tables and plots.
    Files that could not be used are named in `skipped` (one reason each); UserError when no run is usable."""
    skipped = [] if skipped is None else skipped
    run_dirs = find_run_dirs(paths)
    where = ", ".join(map(str, paths))
    if not run_dirs:
        raise UserError(f"no ssl-zoo run directories (folders with config.yaml) below {where}")
    pairs = [run_row(d, skipped) for d in run_dirs]
    if all(row["status"] == "unreadable" for row, _ in pairs):
        first = next(row["note"] for row, _ in pairs)
        raise UserError(f"no usable run below {where}: all {len(pairs)} unreadable (first: {first})")
    df = pd.DataFrame([row for row, _ in pairs]).reindex(columns=RUN_COLUMNS)
    df["label"] = _labels(df, [identity for _, identity in pairs])
    return df.sort_values(["data", "encoder", "label", "epochs", "seed"], na_position="last").reset_index(drop=True)


def _labels(df: pd.DataFrame, identities: list[dict]) -> list[str]:
    """method[/ablation], plus the config keys that tell variants of the same method/ablation apart on the same
    data and encoder (tables and plots are split by those first, so they never become part of a label)."""
    base = [f"? ({Path(d).name})" if m != m else m if a in ("none", None) or a != a else f"{m}/{a}"
            for m, a, d in zip(df["method"], df["ablation"], df["run_dir"])]
    labels = list(base)
    groups = list(zip(base, df["data"], df["encoder"]))
    for group in set(groups):
        name = group[0]
        idx = [i for i, g in enumerate(groups) if g == group and identities[i]]
        variants = {df["variant"].iloc[i] for i in idx}
        if len(variants) < 2:
            continue
        keys = sorted({k for i in idx for k in identities[i]})
        differing = [k for k in keys if len({repr(identities[i].get(k)) for i in idx}) > 1]
        for i in idx:
            labels[i] = f"{name} [{', '.join(f'{k}={identities[i].get(k)}' for k in differing[:3])}]"
    return [str(x) for x in labels]


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setting (label x data x encoder x epochs): mean and std over the seeds of finished runs, n of them,
    and how many runs there are in every status (failed and unfinished ones are counted, never hidden)."""
    keys = ["data", "encoder", "label", "epochs"]
    rows = []
    for values, group in runs.dropna(subset=["label"]).groupby(keys, dropna=False, sort=True):
        done = group[group["status"] == "finished"]
        row = dict(zip(keys, values))
        row.update(method=group["method"].iloc[0], ablation=group["ablation"].iloc[0], runs=len(group), n=len(done),
                   seeds=",".join(str(int(s)) for s in sorted(group["seed"].dropna())),
                   status=", ".join(f"{c} {s}" for s, c in group["status"].value_counts().items()))
        for m in METRICS:
            row.update(_mean_std(done[m], m))
        for epochs in sgd_budgets(runs):  # one set of SGD columns per budget: 5 and 100 epochs never averaged
            scored = done[pd.to_numeric(done["linear_sgd_epochs"], errors="coerce") == epochs]
            for m in SGD_METRICS:
                row.update(_mean_std(scored[m], sgd_column(m, epochs)))
        rows.append(row)
    return pd.DataFrame(rows)


def sgd_budgets(runs: pd.DataFrame) -> list[int]:
    """The eval.epochs of the SGD linear evaluations among the runs (none when no run was scored with it)."""
    if "linear_sgd_epochs" not in runs:
        return []
    return sorted({int(e) for e in pd.to_numeric(runs["linear_sgd_epochs"], errors="coerce").dropna()})


def sgd_column(metric: str, epochs: int) -> str:
    """The summary's name of an SGD metric at one budget: linear_sgd_top1 at 5 epochs -> linear_sgd_5ep_top1."""
    return metric.replace("linear_sgd_", f"linear_sgd_{epochs}ep_")


def _mean_std(values: pd.Series, name: str) -> dict:
    vals = pd.to_numeric(values, errors="coerce").dropna()
    return {f"{name}_mean": vals.mean() if len(vals) else np.nan,
            f"{name}_std": vals.std(ddof=1) if len(vals) > 1 else np.nan}


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if mean != mean:
        return "–"
    return f"{mean:.{digits}f}" if std != std else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _column(summary: pd.DataFrame, name: str, digits: int = 2) -> list[str]:
    return [_pm(m, sd, digits) for m, sd in zip(summary[f"{name}_mean"], summary[f"{name}_std"])]


def _sgd_columns(summary: pd.DataFrame, budgets: list[int]) -> dict[str, list[str]]:
    """The SGD linear evaluation's columns, one set per budget, each header naming protocol and epochs."""
    out = {}
    for epochs in budgets:
        name = SGD.format(epochs)
        out.update({f"{name} top-1": _column(summary, sgd_column("linear_sgd_top1", epochs)),
                    f"{name} top-5": _column(summary, sgd_column("linear_sgd_top5", epochs)),
                    f"random-init {name}": _column(summary, sgd_column("random_init_linear_sgd_top1", epochs))})
    return out


def markdown_tables(runs: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The summary over seeds, then every run with its status. Every linear column names its protocol."""
    budgets = sgd_budgets(runs)
    show = pd.DataFrame({
        "data": summary["data"], "encoder": summary["encoder"], "method": summary["label"],
        "epochs": summary["epochs"], "n": summary["n"].astype(str) + "/" + summary["runs"].astype(str),
        "kNN top-1": _column(summary, "knn_top1"),
        f"{LBFGS} top-1": _column(summary, "linear_top1"),
        f"{LBFGS} top-5": _column(summary, "linear_top5"),
        f"projector {LBFGS}": _column(summary, "proj_linear_top1"),
        f"random-init {LBFGS}": _column(summary, "random_init_linear_top1"),
        **_sgd_columns(summary, budgets),
        "online probe†": _column(summary, "online_probe_acc"),
        **{f"fine-tune {key}": _column(summary, col)
           for key, col in FINETUNE.items() if summary[f"{col}_mean"].notna().any()},  # eval.protocol=finetune
        "pretrain s": _column(summary, "wall_s", 0),
        "images/s": [_pm(m, float("nan"), 0) for m in summary["images_per_s_mean"]],
        "status": summary["status"],
    })
    per_run = runs.assign(epochs=runs["epochs"].astype("Int64"), seed=runs["seed"].astype("Int64"),
                          epochs_done=runs["epochs_done"].astype("Int64"),
                          linear_sgd_epochs=pd.to_numeric(runs["linear_sgd_epochs"], errors="coerce").astype("Int64"))
    sgd = ["linear_sgd_top1", "linear_sgd_epochs"] if budgets else []
    per_run = per_run[["label", "data", "encoder", "epochs", "seed", "status", "epochs_done", "knn_top1",
                       "linear_top1", *sgd, "online_probe_acc", "wall_s", "note", "run_dir"]]
    per_run = per_run.rename(columns={"label": "method", "online_probe_acc": "online probe†",
                                      "linear_top1": f"{LBFGS} top-1", "linear_sgd_top1": "linear (SGD) top-1",
                                      "linear_sgd_epochs": "SGD epochs"})
    per_run = per_run.astype(object).where(per_run.notna(), None)  # blanks, not "nan", where a run has no number
    sgd_note = ("" if not budgets else " Linear (SGD, N ep): eval.protocol=sgd, a linear classifier trained with SGD "
                "for N epochs on crop + flip views of the frozen backbone's standardised features (a budget of its "
                "own, shown next to the L-BFGS probe, never in its columns).")
    return ("## Summary over seeds\n\n"
            "Mean ± std over the finished runs of each setting (n = finished / all runs). kNN: weighted, cosine, "
            "k = eval.knn_k (by default ~15% of a class's train images, at most 200: 20 on digits), T = eval.knn_t "
            "(0.1). Linear (L-BFGS): offline L-BFGS logistic regression on standardised frozen centre-crop "
            "features, weight decay chosen on a validation split of train." + sgd_note + " † online probe: linear "
            "classifier trained during pretraining on augmented train batches (last epoch) — not comparable to "
            "the offline linear probe.\n\n"
            + show.to_markdown(index=False) + "\n\n## Runs\n\n"
            + per_run.to_markdown(index=False, floatfmt=".2f", missingval="–") + "\n")


def gather_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's metrics.csv rows (long format, with label/seed/status) for per-epoch plots."""
    frames = []
    for run in runs.itertuples():
        df = usable_metrics(Path(run.run_dir))
        if df is not None:
            frames.append(df.assign(label=run.label, seed=run.seed, status=run.status, data=run.data,
                                    encoder=run.encoder, epochs=run.epochs))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
