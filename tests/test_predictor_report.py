"""The predictor study's report pieces: the paper-claims table on constructed runs, and the alignment plot."""

from __future__ import annotations

import pandas as pd

from ssl_zoo.analysis.predictor_claims import claims_table
from ssl_zoo.analysis.predictor_plots import plot_alignment


def _runs(**top1: float) -> pd.DataFrame:
    return pd.DataFrame([{"method": "byol", "ablation": a, "status": "finished", "linear_top1": v}
                         for a, v in top1.items()])


def _metrics(**curves: list[float]) -> pd.DataFrame:
    return pd.DataFrame([{"method": "byol", "ablation": a, "epoch": i + 1, "predictor_alignment": v}
                         for a, values in curves.items() for i, v in enumerate(values)])


def _verdicts(runs, metrics) -> list[str]:
    return list(claims_table(runs, metrics)["agrees"])


def test_claims_that_hold():
    runs = _runs(none=80.0, predictor_linear=78.0, predictor_directpred=77.0, predictor_linear_no_wd=76.0)
    metrics = _metrics(predictor_linear=[0.5, 0.7, 0.9], predictor_linear_no_wd=[0.5, 0.55, 0.6])
    table = claims_table(runs, metrics)
    assert list(table["agrees"]) == ["agrees", "agrees", "agrees"]
    assert "77.0 vs trained linear 78.0 (-1.0)" in table["here"].iloc[0]
    assert "0.500 (epoch 1) -> 0.900 (epoch 3)" in table["here"].iloc[1]


def test_claims_that_do_not_hold_and_partial_ones():
    runs = _runs(predictor_linear=80.0, predictor_directpred=60.0)
    metrics = _metrics(predictor_linear=[0.8, 0.7], predictor_linear_no_wd=[0.9, 0.95])
    assert _verdicts(runs, metrics) == ["no", "no", "no"]
    metrics = _metrics(predictor_linear=[0.5, 0.9], predictor_linear_no_wd=[0.5, 0.895])  # 0.0025 apart: no
    assert _verdicts(runs, metrics)[2] == "no"
    runs = _runs(predictor_linear=80.0, predictor_directpred=75.5)  # 4.5 points: partly
    metrics = _metrics(predictor_linear=[0.95, 0.95])  # aligned from the start, flat: partly
    assert _verdicts(runs, metrics) == ["partly", "partly", "–"]
    assert _verdicts(_runs(predictor_linear=70.0, predictor_directpred=79.0), metrics)[0] == "agrees"  # better


def test_missing_runs_read_as_unknown_and_no_study_is_no_table():
    assert _verdicts(_runs(predictor_linear=80.0), _metrics()) == ["–", "–", "–"]
    assert claims_table(_runs(none=80.0), _metrics()).empty


def test_alignment_plot(tmp_path):
    metrics = _metrics(predictor_linear=[0.5, 0.7, 0.9], predictor_directpred=[1.0, 1.0, 1.0])
    metrics["predictor_asymmetry"] = 0.1
    assert plot_alignment(metrics, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 10_000
    assert not plot_alignment(_metrics(), tmp_path / "b.png")  # nothing logged: nothing drawn
    assert not (tmp_path / "b.png").exists()
