"""`ssl-zoo compare`: run directories built by hand (config.yaml + metrics.csv + results.json) -> the table."""

from __future__ import annotations

import functools
import json
import math

import pandas as pd
import pytest
from omegaconf import OmegaConf

from ssl_zoo.analysis.results import gather_runs, summarize
from ssl_zoo.cli import main
from ssl_zoo.commands.compare import compare
from ssl_zoo.config.load import load_config
from ssl_zoo.runs.identity import run_dir_for

from tiny import tiny_overrides


@functools.lru_cache
def _config(overrides: tuple[str, ...], method: str):
    return load_config(tiny_overrides("unused", *overrides, method=method))


def make_run(root, *overrides, method="byol", epochs_done=None, results=None, online=(40.0, 55.0)):
    """A run directory as training leaves it: config.yaml, metrics.csv (epochs_done rows), results.json."""
    cfg = _config(overrides, method).copy()
    cfg.out_dir = str(root)
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    n = int(cfg.trainer.epochs) if epochs_done is None else epochs_done
    rows = [{"epoch": e + 1, "step": 21 * (e + 1), "loss": 1.0 / (e + 1), "online_probe_acc": online[min(e, 1)],
             "z_std": 0.1, "images_per_s": 300.0} for e in range(n)]
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    if results is not None:
        header = {"method": method, "ablation": "none", "data": "digits", "encoder": "small_cnn",
                  "epochs": int(cfg.trainer.epochs), "seed": int(cfg.seed)}
        (run_dir / "results.json").write_text(json.dumps({**header, **results}))
    return run_dir


def finished(knn, linear, **extra):
    return {"status": "finished", "knn_top1": knn, "linear_top1": linear, "linear_top5": 99.0, "wall_s": 10.0,
            "images_per_s": 250.0, "projector": {"knn_top1": knn - 5, "linear_top1": linear - 5},
            "random_init": {"knn_top1": 50.0, "linear_top1": 60.0}, "online_probe_acc": 55.0, **extra}


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "study"
    make_run(root, "seed=0", results=finished(80.0, 90.0))
    make_run(root, "seed=1", results=finished(84.0, 92.0))
    make_run(root, "seed=2", results={"status": "failed", "error": "CUDA out of memory"}, epochs_done=1)
    make_run(root, "seed=3", epochs_done=1)  # unfinished: no results.json
    return root


def test_compare_table_of_finished_failed_and_unfinished_runs(study):
    runs = gather_runs([study])
    assert list(runs["seed"]) == [0, 1, 2, 3]
    assert list(runs["status"]) == ["finished", "finished", "failed", "unfinished"]
    assert list(runs["epochs_done"]) == [2, 2, 1, 1]
    assert runs.loc[2, "note"] == "CUDA out of memory" and "1/2 epochs" in runs.loc[3, "note"]
    assert math.isnan(runs.loc[3, "knn_top1"]) and runs.loc[3, "online_probe_acc"] == 40.0

    summary = summarize(runs)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert (row["label"], row["runs"], row["n"], row["seeds"]) == ("byol", 4, 2, "0,1,2,3")
    assert sorted(row["status"].split(", ")) == ["1 failed", "1 unfinished", "2 finished"]
    assert row["knn_top1_mean"] == pytest.approx(82.0) and row["knn_top1_std"] == pytest.approx(2 ** 1.5)
    assert row["linear_top1_mean"] == pytest.approx(91.0) and row["linear_top1_std"] == pytest.approx(2 ** 0.5)
    assert row["random_init_linear_top1_mean"] == pytest.approx(60.0)


def test_compare_writes_csv_markdown_and_plots(study, tmp_path):
    out = tmp_path / "report"
    text, written = compare([str(study)], str(out))
    names = sorted(p.name for p in written)
    assert names == ["comparison.md", "comparison_online_probe.png", "comparison_probes.png",
                     "comparison_runs.csv", "comparison_summary.csv"]  # one length only: no vs-epochs plot
    assert all((out / n).stat().st_size > 0 for n in names)
    assert "82.00 ± 2.83" in text and "91.00 ± 1.41" in text and "2/4" in text
    assert "CUDA out of memory" in text and "unfinished" in text and "online probe†" in text
    assert len(pd.read_csv(out / "comparison_runs.csv")) == 4


def test_several_lengths_and_variants(study, tmp_path):
    make_run(study, "seed=0", "trainer.epochs=4", results=finished(86.0, 93.0))
    make_run(study, "seed=0", "trainer.lr=0.2", results=finished(70.0, 80.0))
    make_run(study, "seed=0", method="simsiam", results=finished(75.0, 85.0))
    text, written = compare([str(study)], str(tmp_path / "out"))
    assert "comparison_vs_epochs.png" in [p.name for p in written]
    summary = summarize(gather_runs([study]))
    labels = set(summary["label"])
    assert "simsiam" in labels and "byol [trainer.lr=0.2]" in labels and "byol [trainer.lr=0.05]" in labels
    four = summary[summary["epochs"] == 4].iloc[0]
    assert four["label"] == "byol [trainer.lr=0.05]" and four["n"] == 1 and math.isnan(four["knn_top1_std"])


def test_unreadable_runs_are_listed_not_fatal(study, tmp_path):
    broken = make_run(study, "seed=5", results=finished(1.0, 1.0))
    (broken / "results.json").write_text("{not json")
    garbled = study / "garbled"
    garbled.mkdir()
    (garbled / "config.yaml").write_text("method: [unclosed\n")
    (garbled / "metrics.csv").write_text("epoch\n1\n")
    (study / "not_a_run").mkdir()
    (study / "not_a_run" / "config.yaml").write_text("defaults:\n  - method: byol\n")  # a Hydra conf dir
    runs = gather_runs([study])
    assert len(runs) == 6
    assert sorted(runs.loc[runs["status"] == "unreadable", "run_dir"]) == sorted([str(broken), str(garbled)])
    text, _ = compare([str(study)], str(tmp_path / "out"))
    assert "unreadable" in text


def test_compare_cli(study, tmp_path, capsys):
    assert main(["compare", str(study), "--out", str(tmp_path / "o")]) == 0
    assert "Summary over seeds" in capsys.readouterr().out
    for args in ([str(tmp_path / "missing")], [str(tmp_path / "o")]):  # no such dir; a dir without runs
        assert main(["compare", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ssl-zoo: error:") and len(err.strip().splitlines()) == 1


def test_a_seed_sweep_is_aggregated(tmp_path):
    overrides = [o for o in tiny_overrides(tmp_path / "sweep", "trainer.epochs=1", "eval.enabled=false")]
    assert main(["train", "-m", "seed=0,1", *overrides]) == 0
    for run_dir in sorted((tmp_path / "sweep").glob("byol-*")):  # probes of the saved runs, as `ssl-zoo eval`
        assert main(["eval", f"run_dir={run_dir}"]) == 0
    summary = summarize(gather_runs([tmp_path / "sweep"]))
    assert len(summary) == 1 and summary.iloc[0]["n"] == 2 and summary.iloc[0]["seeds"] == "0,1"
    assert not math.isnan(summary.iloc[0]["knn_top1_std"])


def test_sgd_linear_numbers_have_their_own_columns_per_budget_never_the_probes(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "seed=0", results=finished(80.0, 90.0))
    make_run(root, "seed=1", results=finished(80.0, 70.0, linear_protocol="sgd", linear_lbfgs={"top1": 92.0},
                                              linear_sgd={"top1": 70.0, "epochs": 5, "n_train": 1347, "lr": 0.1,
                                                          "batch_size": 256}))  # an older file: SGD in linear_top1
    make_run(root, "seed=2", results=finished(80.0, 94.0, linear_sgd_top1=60.0,
                                              linear_sgd={"top1": 60.0, "epochs": 100, "n_train": 1347, "lr": 0.1,
                                                          "batch_size": 256}))
    summary = summarize(gather_runs([root])).set_index("label")
    assert list(summary.index) == ["byol"] and summary.loc["byol", "n"] == 3
    assert summary.loc["byol", "linear_top1_mean"] == 92.0  # L-BFGS only: 90, 92 (the older file's), 94
    assert summary.loc["byol", "linear_sgd_5ep_top1_mean"] == 70.0
    assert summary.loc["byol", "linear_sgd_100ep_top1_mean"] == 60.0  # another budget: never averaged with 5 ep
    markdown, _ = compare([str(root)], str(tmp_path / "out"))
    assert "linear (SGD, 5 ep) top-1" in markdown and "linear (SGD, 100 ep) top-1" in markdown
    assert "linear (L-BFGS) top-1" in markdown and "eval.protocol=sgd" in markdown
