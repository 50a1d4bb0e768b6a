"""Comparison plots (seaborn, PNG): offline probe accuracy per method with error bars over seeds, accuracy vs
pretraining epochs when runs of several lengths exist, and the online probe during pretraining.

Figures are drawn on matplotlib Figure objects rendered by the Agg canvas, never through pyplot, so importing
this module changes no global backend."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

KNN, LINEAR = "kNN (weighted)", "linear probe (offline)"
RANDOM = "random init"
ONLINE_TITLE = "online probe: trained during pretraining on augmented train batches (not the offline probe)"


def probe_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Long format (label, data, encoder, epochs, seed, probe, accuracy) of the finished runs, plus the
    random-init baseline once per (data, encoder, seed)."""
    done = runs[runs["status"] == "finished"]
    cols = ["label", "data", "encoder", "epochs", "seed"]
    parts = [done[cols].assign(probe=name, accuracy=done[col]) for name, col in
             ((KNN, "knn_top1"), (LINEAR, "linear_top1"))]
    base = done.dropna(subset=["random_init_linear_top1"]).drop_duplicates(["data", "encoder", "epochs", "seed"])
    parts += [base[cols].assign(label=RANDOM, probe=name, accuracy=base[col]) for name, col in
              ((KNN, "random_init_knn_top1"), (LINEAR, "random_init_linear_top1"))]
    table = pd.concat(parts, ignore_index=True)
    table["accuracy"] = pd.to_numeric(table["accuracy"], errors="coerce")
    return table.dropna(subset=["accuracy"])


def save_png(fig: Figure, path: Path, dpi: int = 130) -> None:
    """Rendered in memory and written whole (ssl_zoo.runs.atomic: a failure is one line)."""
    from ssl_zoo.runs.atomic import atomic_write_bytes

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def draw(plot: Callable[[Path], bool], path: Path, skipped: list[str]) -> bool:
    """One plot (True when drawn). Values a hand-edited run file holds that the plotting libraries reject leave
    that plot out, named in `skipped`, instead of failing the whole verb."""
    try:
        return plot(path)
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, OverflowError) as err:
        skipped.append(f"{path.name}: cannot be drawn from these runs ({type(err).__name__}: "
                       f"{(str(err).splitlines() or [''])[0][:80]})")
        return False


def _save(fig: Figure, path: Path) -> None:
    save_png(fig, path)


def _grid(n: int, width: float, height: float) -> tuple[Figure, list]:
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")  # titles clear of the row above
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def integer_axis(ax, values) -> None:
    """Whole-number ticks on the x axis; with a single value, a tick at it (not 0.945 ... 1.05)."""
    ticks = sorted(pd.Series(values).dropna().unique())
    if len(ticks) == 1:
        ax.set_xticks(ticks)
        ax.set_xlim(ticks[0] - 1, ticks[0] + 1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def epochs_text(epochs) -> str:
    return f"{int(epochs)} epoch{'s' if int(epochs) != 1 else ''}"


def spread_text(seeds: int) -> str:
    """What the error bars show: nothing to average over with one seed."""
    return "one seed, no error bar" if seeds < 2 else f"mean ± std over {seeds} seeds"


def plot_probe_accuracy(runs: pd.DataFrame, path: Path) -> bool:
    """One panel per (data, encoder, epochs): mean ± std over seeds per method, seeds as dots."""
    table = probe_table(runs)
    if table.empty:
        return False
    panels = list(table.groupby(["data", "encoder", "epochs"], sort=True))
    fig, axes = _grid(len(panels), max(6.0, 1.3 * table["label"].nunique() + 2), 4.6)
    for ax, ((data, encoder, epochs), sub) in zip(axes, panels):
        order = [lbl for lbl in sorted(sub["label"].unique()) if lbl != RANDOM] + (
            [RANDOM] if RANDOM in set(sub["label"]) else [])
        n = sub[sub["probe"] == LINEAR].groupby("label")["seed"].nunique()
        sns.pointplot(data=sub, x="label", y="accuracy", hue="probe", order=order, hue_order=[KNN, LINEAR],
                      errorbar="sd", capsize=0.15, dodge=0.35, linestyle="none", markers=["o", "s"], ax=ax)
        sns.stripplot(data=sub, x="label", y="accuracy", hue="probe", order=order, hue_order=[KNN, LINEAR],
                      dodge=True, size=3, alpha=0.45, palette=["0.3", "0.3"], legend=False, ax=ax)
        ax.set_xticks(range(len(order)), [f"{lbl}\n(n={n.get(lbl, 0)})" for lbl in order])
        ax.set_xlabel("")
        ax.set_ylabel("top-1 accuracy on test (%)")
        ax.set_title(f"{data}, {encoder}, {epochs_text(epochs)}: {spread_text(int(n.max()) if len(n) else 0)}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(title=None, loc="best", fontsize=8)
    _save(fig, path)
    return True


def plot_accuracy_vs_epochs(runs: pd.DataFrame, path: Path) -> bool:
    """Only when some (data, encoder) has finished runs of several lengths."""
    table = probe_table(runs)
    table = table[table["label"] != RANDOM]
    panels = [(key, sub) for key, sub in table.groupby(["data", "encoder"], sort=True) if sub["epochs"].nunique() > 1]
    if not panels:
        return False
    fig, axes = _grid(len(panels), 6.5, 4.5)
    for ax, ((data, encoder), sub) in zip(axes, panels):
        sns.lineplot(data=sub, x="epochs", y="accuracy", hue="label", style="probe", style_order=[KNN, LINEAR],
                     markers=True, errorbar="sd", err_style="bars", ax=ax)
        ax.set_xlabel("pretraining epochs")
        integer_axis(ax, sub["epochs"])
        ax.set_ylabel("top-1 accuracy on test (%)")
        seeds = int(sub.groupby(["label", "epochs", "probe"])["seed"].nunique().max())
        ax.set_title(f"{data}, {encoder}: accuracy vs pretraining length ({spread_text(seeds)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)
    return True


def plot_online_probe(metrics: pd.DataFrame, path: Path) -> bool:
    """online_probe_acc per epoch from metrics.csv, every run that logged it (unfinished ones included); runs of
    different lengths (other LR schedules) get their own line style."""
    if metrics.empty or "online_probe_acc" not in metrics:
        return False
    metrics = metrics.dropna(subset=["online_probe_acc"])
    if metrics.empty:
        return False
    panels = list(metrics.groupby(["data", "encoder"], sort=True))
    fig, axes = _grid(len(panels), 6.5, 4.5)
    for ax, ((data, encoder), sub) in zip(axes, panels):
        sub = sub.assign(length=sub["epochs"].map(lambda e: f"{epochs_text(e)} runs"))
        style = "length" if sub["length"].nunique() > 1 else None
        sns.lineplot(data=sub, x="epoch", y="online_probe_acc", hue="label", style=style, marker="o",
                     errorbar="sd", ax=ax)
        ax.set_xlabel("epoch")
        integer_axis(ax, sub["epoch"])
        ax.set_ylabel("online probe top-1 (%), train batches")
        ax.set_title(f"{data}, {encoder}\n{ONLINE_TITLE}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)
    return True
