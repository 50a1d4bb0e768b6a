"""The linear evaluation protocols side by side: eval.protocol=sgd adds its own numbers (linear_sgd_top1/top5)
and never replaces the L-BFGS probe's linear_top1; every table names the protocol of each number; an older
results.json (the SGD numbers in linear_top1, linear_protocol "sgd") is read into today's keys."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest

from ssl_zoo.analysis.results import gather_runs, summarize
from ssl_zoo.api import results as api_results
from ssl_zoo.cli import main
from ssl_zoo.commands.compare import compare
from ssl_zoo.commands.eval import format_results
from ssl_zoo.config.load import load_config
from ssl_zoo.launch.run import train
from ssl_zoo.runs.results_file import results_or_problem, results_summary

from tiny import tiny_overrides

SGD_EVAL = ["eval.protocol=sgd", "eval.epochs=1", "eval.sgd.batch_size=256"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny run as training leaves it (L-BFGS probes, random init too), and a copy evaluated again with the
    SGD protocol: (trained run, its results, the SGD-evaluated copy, what `ssl-zoo eval` printed)."""
    root = tmp_path_factory.mktemp("runs")
    run_dir = train(load_config(tiny_overrides(root / "trained", "trainer.epochs=1", "eval.random_init=true")))
    before = json.loads((run_dir / "results.json").read_text())
    sgd_dir = root / "sgd" / run_dir.name
    shutil.copytree(run_dir, sgd_dir)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["eval", str(sgd_dir), *SGD_EVAL]) == 0
    return run_dir, before, sgd_dir, printed.getvalue()


def _results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _copy(run_dir, tmp_path):
    dst = tmp_path / run_dir.name
    shutil.copytree(run_dir, dst)
    return dst


def test_an_sgd_evaluation_keeps_the_headline_and_adds_its_own_keys(runs):
    _, before, sgd_dir, _ = runs
    after = _results(sgd_dir)
    assert before["linear_protocol"] == after["linear_protocol"] == "lbfgs"
    for key in ("linear_top1", "linear_top5", "knn_top1"):
        assert after[key] == before[key], key  # the same checkpoint, the same L-BFGS number
        assert after["random_init"][key] == before["random_init"][key], key
    sgd = after["linear_sgd"]
    assert sgd["epochs"] == 1 and sgd["standardised"] and sgd["n_train"] == after["linear"]["n_train"]
    assert (after["linear_sgd_top1"], after["linear_sgd_top5"]) == (sgd["top1"], sgd["top5"])
    assert after["random_init"]["linear_sgd_top1"] == after["random_init"]["linear_sgd"]["top1"]
    assert "linear_sgd_top1" not in after["projector"] and "linear_lbfgs" not in after
    assert "linear_sgd_top1" not in before


def test_the_eval_table_names_each_protocol(runs):
    _, before, sgd_dir, printed = runs
    after = _results(sgd_dir)
    header = next(line for line in printed.splitlines() if line.startswith("offline probes"))
    assert "linear (L-BFGS) top-1" in header and "linear (SGD, 1 ep) top-1" in header
    assert header.index("linear (L-BFGS) top-1") < header.index("linear (SGD, 1 ep) top-1")
    rows = {line[:24].strip(): line[24:].split() for line in printed.splitlines()
            if line[:24].strip() in ("trained", "trained (projector out)", "random_init")}
    assert rows["trained"][:3] == [f"{before[k]:.2f}" for k in ("knn_top1", "linear_top1", "linear_top5")]
    assert rows["trained"][3:5] == [f"{after[k]:.2f}" for k in ("linear_sgd_top1", "linear_sgd_top5")]
    assert rows["trained (projector out)"][3:5] == ["–", "–"]  # L-BFGS only: marked, not left blank
    assert rows["random_init"][3] == f"{after['random_init']['linear_sgd_top1']:.2f}"
    assert "linear (SGD, 1 ep): eval.protocol=sgd" in printed and "linear (L-BFGS): logistic regression" in printed


def test_a_later_default_eval_keeps_the_sgd_numbers_of_the_same_weights(runs, tmp_path):
    _, before, sgd_dir, _ = runs
    run_dir = _copy(sgd_dir, tmp_path)
    sgd = _results(run_dir)
    assert main(["eval", str(run_dir)]) == 0
    again = _results(run_dir)
    assert again["linear_top1"] == before["linear_top1"]
    for key in ("linear_sgd_top1", "linear_sgd_top5", "linear_sgd"):
        assert again[key] == sgd[key] and again["random_init"][key] == sgd["random_init"][key], key
    assert main(["eval", str(run_dir), "eval.max_train=600"]) == 0  # other train images: no longer its numbers
    fewer = _results(run_dir)
    assert "linear_sgd" not in fewer and "linear_sgd_top1" not in fewer
    assert "linear_sgd_top1" not in fewer["random_init"]


def test_compare_shows_both_protocols_in_their_own_columns(runs, tmp_path):
    run_dir, before, sgd_dir, _ = runs
    after = _results(sgd_dir)
    frame = gather_runs([run_dir.parent.parent])  # the trained run and its SGD-evaluated copy: one setting
    summary = summarize(frame)
    assert len(summary) == 1 and summary.iloc[0]["n"] == 2
    assert summary.iloc[0]["linear_top1_mean"] == pytest.approx(before["linear_top1"])  # never mixed with SGD
    assert summary.iloc[0]["linear_sgd_1ep_top1_mean"] == pytest.approx(after["linear_sgd_top1"])
    markdown, _ = compare([str(run_dir.parent.parent)], str(tmp_path / "out"))
    header = next(line for line in markdown.splitlines() if line.startswith("| data"))
    for column in ("linear (L-BFGS) top-1", "projector linear (L-BFGS)", "random-init linear (L-BFGS)",
                   "linear (SGD, 1 ep) top-1", "random-init linear (SGD, 1 ep)"):
        assert f" {column} " in header, column
    assert "| linear top-1 |" not in markdown  # no linear column without its protocol
    runs_header = markdown.split("## Runs")[1].strip().splitlines()[0]
    assert "linear (L-BFGS) top-1" in runs_header and "linear (SGD) top-1" in runs_header
    assert "SGD epochs" in runs_header


def test_compare_without_sgd_numbers_has_no_sgd_columns(runs, tmp_path):
    run_dir, _, _, _ = runs
    markdown, _ = compare([str(run_dir)], str(tmp_path / "out"))
    assert "linear (L-BFGS) top-1" in markdown and "SGD" not in markdown


def _old_style(results: dict) -> dict:
    """results.json as eval.protocol=sgd wrote it before the split: SGD numbers in linear_top1/top5."""
    old = json.loads(json.dumps(results))
    for part in (old, old["random_init"]):
        part["linear_lbfgs"] = {"top1": part["linear_top1"], "top5": part["linear_top5"]}
        part.update(linear_top1=part.pop("linear_sgd_top1"), linear_top5=part.pop("linear_sgd_top5"),
                    linear_protocol="sgd")
        part["linear_sgd"].pop("standardised")
    return old


def test_an_older_sgd_results_file_is_read_into_todays_keys(runs, tmp_path):
    _, before, sgd_dir, _ = runs
    new = _results(sgd_dir)
    run_dir = _copy(sgd_dir, tmp_path)
    old = _old_style(new)
    assert old["linear_top1"] == new["linear_sgd_top1"]  # what an older file's headline held
    (run_dir / "results.json").write_text(json.dumps(old))
    read, problem = results_or_problem(run_dir)
    assert problem is None and read == {**new, "linear_sgd": old["linear_sgd"],
                                        "random_init": {**new["random_init"],
                                                        "linear_sgd": old["random_init"]["linear_sgd"]}}
    assert api_results(run_dir)["linear_top1"] == before["linear_top1"]
    assert results_summary(run_dir)[0]["linear_top1"] == before["linear_top1"]  # `ssl-zoo status`
    printed = format_results(run_dir, read)
    assert "linear (SGD, 1 ep) top-1" in printed and "features (not standardised)" in printed
    summary = summarize(gather_runs([run_dir]))
    assert summary.iloc[0]["linear_top1_mean"] == pytest.approx(before["linear_top1"])
    assert summary.iloc[0]["linear_sgd_1ep_top1_mean"] == pytest.approx(new["linear_sgd_top1"])
    assert main(["eval", str(run_dir)]) == 0  # evaluated again: written in today's keys, the SGD numbers kept
    rewritten = _results(run_dir)
    assert rewritten["linear_top1"] == before["linear_top1"] and rewritten["linear_protocol"] == "lbfgs"
    assert rewritten["linear_sgd_top1"] == new["linear_sgd_top1"] and "linear_lbfgs" not in rewritten
    assert "linear_lbfgs" not in rewritten["random_init"]
