"""Which label-free metric tracks the probe: across the finished runs of a folder, the Spearman rank correlation
between each label-free metric at the final epoch (the last metrics.csv row) and the linear probe's top-1
(results.json), with the number of runs it rests on, and one scatter panel per metric, collapsed runs marked.

α-ReQ is not better the higher it is (Agrawal et al.: α near 1 is best), so it is also scored as -|α - 1|.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import spearmanr

from ssl_zoo.analysis.compare_plots import save_png
from ssl_zoo.runs.metrics_file import metrics_or_problem

PROBE = "linear_top1"
MIN_RUNS = 3  # a rank correlation of fewer runs says nothing
EMBEDDINGS = {"": "projector", "backbone_": "backbone"}
# (column, what the table and plots call it); alpha_req_to_1 = -|α - 1| is derived here, not logged
METRICS = [("effective_rank", "effective rank (RankMe)"), ("alpha_req", "α-ReQ α"),
           ("alpha_req_to_1", "α-ReQ −abs(α−1)"), ("lidar", "LiDAR"), ("z_std", "z_std"), ("alignment", "alignment"),
           ("uniformity", "uniformity")]
NOTE = ("Spearman ρ between each label-free metric at the final epoch (last metrics.csv row, held-out monitor "
        "images) and linear top-1, over the finished runs that have both; n = that number of runs. α-ReQ is "
        "not monotone in quality (α near 1 is best), hence also −|α−1|. Lower alignment and uniformity are the "
        "\"better\" values of those two, so a good metric shows ρ < 0 there.")


def final_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run with a probe accuracy: run_dir, label, linear_top1, collapsed and every metric's
    value in the run's last metrics.csv row (NaN where the run did not log it)."""
    rows = []
    done = runs[(runs["status"] == "finished") & pd.to_numeric(runs[PROBE], errors="coerce").notna()]
    for run in done.itertuples():
        metrics = metrics_or_problem(Path(run.run_dir))[0]  # an unusable file is named by the caller's reader
        last = metrics.iloc[-1] if metrics is not None else pd.Series(dtype=float)
        row = {"run_dir": run.run_dir, "label": getattr(run, "label", None) or f"{run.method}/{run.ablation}",
               PROBE: float(getattr(run, PROBE)), "collapsed": _flag(run.collapsed)}
        for prefix in EMBEDDINGS:
            for column, _ in METRICS:
                row[prefix + column] = float(last.get(prefix + column, math.nan))
            row[prefix + "alpha_req_to_1"] = -abs(row[prefix + "alpha_req"] - 1.0)
        rows.append(row)
    return pd.DataFrame(rows)


def _flag(value) -> bool | None:
    return bool(value) if isinstance(value, bool | np.bool_) or value in (0, 1) else None


def correlation_table(final: pd.DataFrame) -> pd.DataFrame:
    """metric, embedding, n (runs with both numbers), Spearman ρ and its p-value (NaN when n < MIN_RUNS)."""
    rows = []
    for prefix, embedding in EMBEDDINGS.items():
        for column, name in METRICS:
            pair = final[[prefix + column, PROBE]].dropna() if not final.empty else pd.DataFrame()
            rho = p = math.nan
            if len(pair) >= MIN_RUNS and pair[prefix + column].nunique() > 1 and pair[PROBE].nunique() > 1:
                rho, p = (float(v) for v in spearmanr(pair[prefix + column], pair[PROBE]))
            rows.append({"metric": name, "embedding": embedding, "n": len(pair), "spearman ρ": rho, "p": p})
    return pd.DataFrame(rows, columns=["metric", "embedding", "n", "spearman ρ", "p"])


def enough(table: pd.DataFrame) -> bool:
    return bool((table["n"] >= MIN_RUNS).any())


def markdown(table: pd.DataFrame) -> str:
    """The table, or one line when no metric has MIN_RUNS runs with both numbers."""
    if not enough(table):
        return (f"Fewer than {MIN_RUNS} finished runs have both a label-free metric and {PROBE} "
                f"(at most {int(table['n'].max()) if len(table) else 0}): no rank correlation.")
    shown = table.assign(**{"spearman ρ": [_num(v, "+.2f") for v in table["spearman ρ"]],
                            "p": [_num(v, ".3f") for v in table["p"]]})
    return shown.to_markdown(index=False, disable_numparse=True)  # "+0.80" stays as written, sign and all


def _num(v: float, spec: str) -> str:
    return "–" if v != v else format(v, spec)


def section(runs: pd.DataFrame) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """(markdown of the section's body, the per-run final metrics, the table)."""
    final = final_metrics(runs)
    table = correlation_table(final)
    return (f"{NOTE}\n\n{markdown(table)}\n" if enough(table) else f"{markdown(table)}\n"), final, table


def compare_text(runs: pd.DataFrame) -> str:
    """The section as `ssl-zoo compare` appends it to its tables."""
    return f"\n## Which metric tracks the probe\n\n{section(runs)[0]}"


def plot_scatter(final: pd.DataFrame, table: pd.DataFrame, path: Path, columns: int = 4) -> bool:
    """One panel per metric and embedding that some run logged: the metric against linear top-1, collapsed runs
    as red crosses, ρ and n in the panel's title."""
    if not enough(table):
        return False
    panels = [(prefix, embedding, column, name) for prefix, embedding in EMBEDDINGS.items() for column, name in METRICS
              if final[prefix + column].notna().any()]
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(3.6 * min(columns, len(panels)), 3.2 * rows), layout="constrained")
    data = final.assign(state=final["collapsed"].map({True: "collapsed", False: "not collapsed"}).fillna("no verdict"))
    palette = {"not collapsed": "tab:blue", "collapsed": "tab:red", "no verdict": "0.5"}
    markers = {"not collapsed": "o", "collapsed": "X", "no verdict": "s"}
    for i, (prefix, embedding, column, name) in enumerate(panels):
        ax = fig.add_subplot(rows, min(columns, len(panels)), i + 1)
        sns.scatterplot(data=data.dropna(subset=[prefix + column]), x=prefix + column, y=PROBE, hue="state",
                        style="state", palette=palette, markers=markers, s=50, ax=ax, legend=i == 0)
        row = table[(table["metric"] == name) & (table["embedding"] == embedding)].iloc[0]
        rho = "ρ –" if row["spearman ρ"] != row["spearman ρ"] else f"ρ = {row['spearman ρ']:+.2f}"
        ax.set_title(f"{name} ({embedding})\n{rho}, n = {row['n']}", fontsize=9)
        ax.set_xlabel(name, fontsize=9)
        ax.set_ylabel("linear top-1 (%)" if i % columns == 0 else "", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(5))  # long tick labels (-0.825) would run into each other
        ax.grid(alpha=0.3)
        if column == "alpha_req":
            ax.axvline(1.0, color="0.4", ls="--", lw=1, label="α = 1")  # the paper's best α
        if i == 0:
            ax.legend(fontsize=7, title=None, loc="best")
    fig.suptitle("label-free metric at the final epoch vs linear probe top-1 (one point per finished run)",
                 fontsize=11)
    save_png(fig, path, dpi=110)
    return True
