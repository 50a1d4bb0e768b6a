"""A run set by trainer.steps records the epochs it trained (as metrics.csv numbers them), not trainer.epochs, in
results.json and in `ssl-zoo compare`; a partial last epoch is said plainly; an older results.json still reads."""

from __future__ import annotations

import csv
import json

from ssl_zoo.analysis.results import gather_runs
from ssl_zoo.config.load import load_config
from ssl_zoo.launch.run import train

from tiny import tiny_overrides


def test_a_run_set_by_steps_records_the_epochs_it_trained(tmp_path):
    # digits: 1347 images / batch 64 = 21 steps an epoch; 30 steps = one epoch and 9 steps of a second
    run_dir = train(load_config(tiny_overrides(tmp_path, "trainer.steps=30", "trainer.epochs=30",
                                               "eval.enabled=false")))
    results = json.loads((run_dir / "results.json").read_text())
    epochs_in_metrics = int(list(csv.DictReader(open(run_dir / "metrics.csv")))[-1]["epoch"])
    assert (results["epochs"], results["steps"], results["steps_per_epoch"]) == (epochs_in_metrics, 30, 21) == (2, 30, 21)
    row = gather_runs([tmp_path]).iloc[0]
    assert row["epochs"] == 2 and row["note"] == "trainer.steps=30: last epoch partial (9/21 steps)"

    # a results.json written before runs recorded their length (it said trainer.epochs): metrics.csv decides
    older = {k: v for k, v in results.items() if k not in ("steps", "steps_per_epoch")}
    (run_dir / "results.json").write_text(json.dumps({**older, "epochs": 30}))
    assert gather_runs([tmp_path]).iloc[0]["epochs"] == 2


def test_a_run_set_by_epochs_records_them_as_before(tmp_path):
    run_dir = train(load_config(tiny_overrides(tmp_path, "trainer.epochs=1", "eval.enabled=false")))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs"] == 1 and "steps" not in results
    assert gather_runs([tmp_path]).iloc[0]["epochs"] == 1
