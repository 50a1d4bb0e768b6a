"""The predictor study's curves (seaborn, PNG): per method, how a linear predictor's eigenspace aligns with that of
F = E[f f^T] of its inputs over training, and how symmetric it becomes (metrics.csv predictor_alignment and
predictor_asymmetry; definitions in ssl_zoo/models/linear_predictor.py). Only runs with a linear or DirectPred
predictor log them; the others are absent from the plot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ssl_zoo.analysis.compare_plots import integer_axis, save_png

PANELS = [("predictor_alignment", "alignment of W_p with F (1 = aligned)"),
          ("predictor_asymmetry", "asymmetry |W_p - W_pᵀ| / |W_p|")]


def plot_alignment(metrics: pd.DataFrame, path: Path) -> bool:
    """One column per method, rows: alignment and asymmetry per epoch, one line per ablation. False (nothing
    drawn) when no run logged them."""
    if metrics.empty or "predictor_alignment" not in metrics:
        metrics = pd.DataFrame()
    logged = metrics.dropna(subset=["predictor_alignment"]) if not metrics.empty else metrics
    if logged.empty:
        return False
    methods = sorted(logged["method"].unique())
    fig = Figure(figsize=(4.6 * len(methods), 3.4 * len(PANELS)), layout="constrained")
    order = sorted(logged["ablation"].unique())
    colors = dict(zip(order, sns.color_palette("tab10", max(len(order), 3))))
    for c, method in enumerate(methods):
        sub = logged[logged["method"] == method]
        for r, (column, label) in enumerate(PANELS):
            ax = fig.add_subplot(len(PANELS), len(methods), r * len(methods) + c + 1)
            if column in sub and sub[column].notna().any():
                hue = [a for a in order if a in set(sub["ablation"])]
                sns.lineplot(data=sub, x="epoch", y=column, hue="ablation", hue_order=hue, palette=colors,
                             style="ablation", style_order=hue, markers=True, errorbar=None, ax=ax)  # dashes:
                # runs that agree closely (weight decay at a short budget) stay visible on top of each other
            ax.set_ylim(0, 1.02 if column == "predictor_alignment" else None)
            ax.set_title(f"{method}: {label.split(' (')[0]}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label if c == 0 else "")
            integer_axis(ax, sub["epoch"])
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, title=None, loc="best")
    fig.suptitle("linear predictor W_p vs F = E[f fᵀ] of its inputs, per epoch", fontsize=12)
    save_png(fig, path, dpi=120)
    return True
