"""The predictor study's paper claims (Tian, Chen & Ganguli 2021) checked against a folder of runs, per method:

1. DirectPred does as well as a trained linear predictor: within a few points of it, or better (linear top-1;
   the paper's DirectPred beats its trained linear predictor in some settings).
2. A trained linear predictor's eigenspace aligns with that of F over training (predictor_alignment rises).
3. Without weight decay the alignment is weaker or slower (mean predictor_alignment over the epochs lower).

Each verdict is agrees / partly / no with the numbers it rests on, or "–" when the runs it needs are missing. The
thresholds are fixed here: DirectPred at most CLOSE points below agrees, at most 2 x CLOSE below partly; a rise of
at least RISE in alignment from the first to the last epoch agrees, an alignment already at least HIGH and flat
partly; weight decay's effect agrees when it raises the mean alignment by at least RISE.
"""

from __future__ import annotations

import pandas as pd

CLOSE = 3.0  # linear top-1 points: "within a few points"
RISE = 0.01  # alignment units from the first to the last epoch
HIGH = 0.9  # an alignment this high from the first epoch on: aligned, but not "over training"
COLUMNS = ["method", "claim", "here", "agrees"]


def _cell(runs: pd.DataFrame, method: str, ablation: str) -> pd.DataFrame:
    return runs[(runs["method"] == method) & (runs["ablation"] == ablation) & (runs["status"] == "finished")]


def _curve(metrics: pd.DataFrame, method: str, ablation: str) -> pd.Series:
    if metrics.empty or "predictor_alignment" not in metrics:
        return pd.Series(dtype=float)
    sub = metrics[(metrics["method"] == method) & (metrics["ablation"] == ablation)]
    return sub.groupby("epoch")["predictor_alignment"].mean().dropna()


def _directpred(runs: pd.DataFrame, method: str) -> tuple[str, str]:
    linear = _cell(runs, method, "predictor_linear")["linear_top1"].mean()
    direct = _cell(runs, method, "predictor_directpred")["linear_top1"].mean()
    if linear != linear or direct != direct:
        return "needs predictor_linear and predictor_directpred runs with probes", "–"
    gap = direct - linear
    verdict = "agrees" if gap >= -CLOSE else "partly" if gap >= -2 * CLOSE else "no"
    return f"DirectPred {direct:.1f} vs trained linear {linear:.1f} ({gap:+.1f})", verdict


def _aligns(metrics: pd.DataFrame, method: str) -> tuple[str, str]:
    curve = _curve(metrics, method, "predictor_linear")
    if len(curve) < 2:
        return "needs a predictor_linear run of 2+ epochs", "–"
    first, last = float(curve.iloc[0]), float(curve.iloc[-1])
    verdict = "agrees" if last - first >= RISE else "partly" if min(first, last) >= HIGH else "no"
    return f"alignment {first:.3f} (epoch {curve.index[0]}) -> {last:.3f} (epoch {curve.index[-1]})", verdict


def _weight_decay(metrics: pd.DataFrame, method: str) -> tuple[str, str]:
    with_wd, without = _curve(metrics, method, "predictor_linear"), _curve(metrics, method, "predictor_linear_no_wd")
    if with_wd.empty or without.empty:
        return "needs predictor_linear and predictor_linear_no_wd runs", "–"
    a, b = float(with_wd.mean()), float(without.mean())
    verdict = "agrees" if a - b >= RISE else "no"  # a smaller gap is no measurable difference
    return f"mean alignment over epochs {b:.3f} without vs {a:.3f} with weight decay", verdict


def claims_table(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, claim) for the methods with any predictor-study run; empty when there is none."""
    study = runs[runs["ablation"].astype(str).str.startswith("predictor_")]
    rows = []
    for method in sorted(study["method"].unique()):
        for claim, check in (("DirectPred does as well as a trained linear predictor (within a few points)", _directpred),
                             ("a trained linear predictor's eigenspace aligns with F over training", _aligns),
                             ("without weight decay the alignment is weaker or slower", _weight_decay)):
            here, verdict = check(runs if check is _directpred else metrics, method)
            rows.append({"method": method, "claim": claim, "here": here, "agrees": verdict})
    return pd.DataFrame(rows, columns=COLUMNS)
