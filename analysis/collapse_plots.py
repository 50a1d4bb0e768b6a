"""Collapse plots (seaborn, PNG): z_std and effective rank per epoch for each method's ablations, final
covariance spectra, a method x ablation heatmap of linear top-1 with collapsed cells marked, DINO's teacher
entropy and KL(teacher||student) per epoch.

Inputs are the frames analysis/report.py builds: `runs` (one row per run: method, ablation, run_dir, linear_top1,
collapsed, num_outputs, ...), `metrics` (metrics.csv rows with method and ablation) and `spectra` (long format:
method, ablation, embedding, k, eigenvalue). Figures use matplotlib Figure objects on the Agg canvas, never
pyplot, so importing this changes no global backend.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from ssl_zoo.analysis.compare_plots import integer_axis, save_png

EMBEDDINGS = {"": "projector output", "backbone_": "backbone features"}
PALETTE = "tab10"


def _save(fig: Figure, path: Path) -> None:
    save_png(fig, path, dpi=120)


def _axes(rows: int, cols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = np.array([[fig.add_subplot(rows, cols, r * cols + c + 1) for c in range(cols)] for r in range(rows)])
    return fig, axes


def _hue_order(sub: pd.DataFrame) -> list[str]:
    """`none` first, so the default run keeps the same colour in every panel."""
    names = sorted(sub["ablation"].unique())
    return (["none"] if "none" in names else []) + [n for n in names if n != "none"]


def _palette(order: list[str]) -> dict[str, tuple]:
    colors = sns.color_palette(PALETTE, max(len(order), 3))
    return {name: colors[i % len(colors)] for i, name in enumerate(order)}


def _per_method_curves(metrics: pd.DataFrame, path: Path, column: str, ylabel: str, title: str,
                       ref_column: str | None = None, log: bool = False) -> bool:
    prefixes = [p for p in EMBEDDINGS if f"{p}{column}" in metrics]
    if metrics.empty or not prefixes:
        return False
    methods = sorted(metrics["method"].unique())
    fig, axes = _axes(len(prefixes), len(methods), 4.2, 3.4)
    for r, prefix in enumerate(prefixes):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            sub = metrics[metrics["method"] == method].dropna(subset=[f"{prefix}{column}"])
            order = _hue_order(sub)
            if not sub.empty:
                sns.lineplot(data=sub, x="epoch", y=f"{prefix}{column}", hue="ablation", hue_order=order,
                             palette=_palette(order), marker="o", errorbar=None, ax=ax)
            if ref_column and f"{prefix}{ref_column}" in sub and not sub.empty:
                ref = float(sub[f"{prefix}{ref_column}"].median())
                ax.axhline(ref, color="0.25", ls="--", lw=1.2, label="1/√d (healthy)")
            if log:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
            else:
                ax.set_ylim(bottom=0)
            ax.set_title(f"{method}: {EMBEDDINGS[prefix]}", fontsize=10)
            ax.set_xlabel("epoch")
            integer_axis(ax, sub["epoch"])
            ax.set_ylabel(ylabel if c == 0 else "")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, title=None, loc="best")
    fig.suptitle(title, fontsize=12)
    _save(fig, path)
    return True


def plot_z_std(metrics: pd.DataFrame, path: Path) -> bool:
    """z_std = mean over channels of std over samples of z/|z|; dashed: 1/sqrt(d), the healthy value."""
    return _per_method_curves(metrics, path, "z_std", "z_std (held-out images)",
                              "std of l2-normalised embeddings per epoch (→ 0: collapse; dashed: 1/√d)",
                              ref_column="z_std_ref")


def plot_effective_rank(metrics: pd.DataFrame, path: Path) -> bool:
    return _per_method_curves(metrics, path, "effective_rank", "effective rank (RankMe)",
                              "effective rank of the embeddings per epoch (1 = all on a line)", log=True)


def plot_spectra(spectra: pd.DataFrame, path: Path) -> bool:
    """Final covariance eigenvalues, normalised by their sum, sorted, on a log scale."""
    if spectra.empty:
        return False
    embeddings = [e for e in EMBEDDINGS.values() if e in set(spectra["embedding"])]
    methods = sorted(spectra["method"].unique())
    fig, axes = _axes(len(embeddings), len(methods), 4.2, 3.4)
    for r, emb in enumerate(embeddings):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            sub = spectra[(spectra["method"] == method) & (spectra["embedding"] == emb)]
            order = _hue_order(sub)
            if not sub.empty:
                sns.lineplot(data=sub, x="k", y="eigenvalue", hue="ablation", hue_order=order,
                             palette=_palette(order), errorbar=None, ax=ax)
            ax.set_yscale("log")
            ax.set_title(f"{method}: {emb}", fontsize=10)
            ax.set_xlabel("index k (sorted)")
            ax.set_ylabel("λ_k / Σλ" if c == 0 else "")
            ax.grid(alpha=0.3, which="both")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, title=None, loc="best")
            cuts = sorted({int(n) for n in sub.get("cut_at", pd.Series(dtype=float)).dropna()})
            if cuts:  # see analysis.report.sample_limited
                ax.text(0.02, 0.02, f"cut at k = n-1: only n = {'/'.join(map(str, cuts))} held-out images\n"
                        "(beyond it the covariance is 0: sample size, not collapse)", transform=ax.transAxes,
                        fontsize=7, color="0.3", va="bottom")
    fig.suptitle("final spectrum of the embedding covariance (a steep drop = dimensional collapse)", fontsize=12)
    _save(fig, path)
    return True


def plot_heatmap(runs: pd.DataFrame, path: Path, value: str = "linear_top1") -> bool:
    """Method x ablation, mean over seeds: the accuracy in each cell, coloured by its change from the method's
    default (`none`); cells whose runs collapsed (by the documented rule) are boxed."""
    done = runs[runs["status"] == "finished"].dropna(subset=[value])
    if done.empty:
        return False
    acc = done.pivot_table(index="method", columns="ablation", values=value, aggfunc="mean")
    collapsed = done.assign(c=done["collapsed"].astype(float)).pivot_table(
        index="method", columns="ablation", values="c", aggfunc="mean").reindex_like(acc)
    cols = (["none"] if "none" in acc.columns else []) + [c for c in acc.columns if c != "none"]
    acc, collapsed = acc[cols], collapsed[cols]
    delta = acc.sub(acc["none"], axis=0) if "none" in acc.columns else acc * np.nan
    annot = acc.copy().astype(object)
    for i in acc.index:
        for j in acc.columns:
            v, d = acc.loc[i, j], delta.loc[i, j]
            text = "" if v != v else f"{v:.1f}" + (f" ({d:+.1f})" if j != "none" and d == d else "")
            annot.loc[i, j] = text + ("\nCOLLAPSED" if collapsed.loc[i, j] >= 0.5 else "")
    lim = max(5.0, float(np.nanmax(np.abs(delta.to_numpy()))) if np.isfinite(delta.to_numpy()).any() else 5.0)
    fig = Figure(figsize=(max(1.35 * len(cols) + 2.5, 6.5), max(0.85 * len(acc) + 1.8, 3.6)), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    sns.heatmap(delta, annot=annot, fmt="", cmap="RdBu", center=0, vmin=-lim, vmax=lim, linewidths=0.5,
                linecolor="white", cbar_kws={"label": "change from ablation none (points)", "shrink": 0.9},
                annot_kws={"fontsize": 8}, ax=ax)
    for y, i in enumerate(acc.index):
        for x, j in enumerate(acc.columns):
            if collapsed.loc[i, j] >= 0.5:
                ax.add_patch(_box(x, y))
    base = random_init_linear(done)
    ref = f"; random-init backbone {base:.1f}%" if base == base else ""
    ax.set_xlabel("ablation")
    ax.set_ylabel("method")
    # a figure title, not the axes': the colour bar's label stays clear of it
    fig.suptitle(f"linear probe top-1 (%) on frozen backbone features{ref}\nred box: collapsed by the documented "
                 "rule; blank: not run", fontsize=10)
    ax.tick_params(axis="x", rotation=35)
    _save(fig, path)
    return True


def random_init_linear(runs: pd.DataFrame) -> float:
    """The study's reference: linear top-1 of the same encoder at random init (mean over the runs that measured
    it; nan when none did)."""
    return float(pd.to_numeric(runs["random_init_linear_top1"], errors="coerce").mean())


def _box(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x + 0.04, y + 0.04), 0.92, 0.92, fill=False, edgecolor="red", lw=2.5)


def plot_dino(metrics: pd.DataFrame, runs: pd.DataFrame, path: Path) -> bool:
    """Teacher entropy (with log K, uniform output) and KL(teacher||student) per epoch, for methods that log them."""
    if metrics.empty or "teacher_entropy" not in metrics:
        return False
    sub = metrics.dropna(subset=["teacher_entropy"])
    if sub.empty:
        return False
    order = _hue_order(sub)
    fig, axes = _axes(1, 2, 5.0, 3.6)
    ax = axes[0, 0]
    sns.lineplot(data=sub, x="epoch", y="teacher_entropy", hue="ablation", hue_order=order, palette=_palette(order),
                 style="method" if sub["method"].nunique() > 1 else None, marker="o", errorbar=None, ax=ax)
    k = pd.to_numeric(runs.loc[runs["method"].isin(sub["method"].unique()), "num_outputs"], errors="coerce").max()
    if k == k and k:
        ax.axhline(math.log(k), color="0.25", ls="--", lw=1.2, label=f"log K (uniform), K={int(k)}")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("teacher entropy (nats)")
    ax.set_title("teacher entropy (→ 0: one dimension dominates)", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    if "kl_teacher_student" in sub:
        sns.lineplot(data=sub, x="epoch", y="kl_teacher_student", hue="ablation", hue_order=order,
                     palette=_palette(order), marker="o", errorbar=None, ax=ax)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("KL(teacher || student) (nats)")
    ax.set_title("KL(teacher || student) (→ 0 in both collapses)", fontsize=10)
    ax.legend(fontsize=7)
    for a in axes.flat:
        a.grid(alpha=0.3)
        a.set_xlabel("epoch")
        integer_axis(a, sub["epoch"])
    fig.suptitle("DINO: means over each epoch's training steps", fontsize=12)
    _save(fig, path)
    return True
