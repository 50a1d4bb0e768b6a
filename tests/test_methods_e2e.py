"""Each new method trains end to end from the CLI on digits with tiny heads (a few seconds each)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from ssl_zoo.cli import main
from ssl_zoo.config.load import load_config
from ssl_zoo.runs.identity import run_dir_for

COMMON = ["data=digits", "encoder=small_cnn", "encoder.width=8", "trainer.batch_size=128", "trainer.epochs=1",
          "eval.random_init=false", "progress_bar=false", "monitor.num_images=128"]
SMALL_PROJECTOR = ["method.projector.hidden_dim=64", "method.projector.out_dim=32"]
TINY = {
    "mocov2": [*SMALL_PROJECTOR, "method.queue_size=256"],
    "mocov3": [*SMALL_PROJECTOR, "method.predictor.hidden_dim=64", "method.predictor.out_dim=32"],
    "dino": ["method.head.hidden_dim=64", "method.head.out_dim=32", "method.head.num_prototypes=64",
             "views=multicrop", "views.crops.local.n=2"],
    "simclr": SMALL_PROJECTOR,
    "barlow": [*SMALL_PROJECTOR, "method.projector.layers=2"],
    "vicreg": [*SMALL_PROJECTOR, "method.projector.layers=2"],
    "swav": [*SMALL_PROJECTOR, "method.num_prototypes=64", "method.queue_length=256", "method.queue_start_epoch=0.5",
             "views.crops.local.n=2"],
}


@pytest.mark.parametrize("method", sorted(TINY))
def test_method_trains_from_the_cli(tmp_path, capsys, method):
    overrides = [f"method={method}", *COMMON, *TINY[method], f"out_dir={tmp_path}"]
    assert main(["train", *overrides]) == 0
    assert "kNN top-1" in capsys.readouterr().out
    run_dir = run_dir_for(load_config(overrides))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and results["method"] == method
    assert 0 <= results["knn_top1"] <= 100 and 0 <= results["linear_top1"] <= 100
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["loss"])) and rows[0]["online_probe_acc"]
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["method"]
    if method == "mocov2":  # the queue and its pointer are part of the checkpoint
        assert state["queue"].shape == (256, 32) and "queue_ptr" in state
    if method == "dino":
        for key in ("teacher_entropy", "kl_teacher_student", "teacher_temp", "tau"):
            assert math.isfinite(float(rows[0][key])), key
        assert 0 <= float(rows[0]["teacher_entropy"]) <= math.log(64) + 1e-4
        assert state["center"].shape == (64,) and state["center"].abs().sum() > 0


def test_queue_that_does_not_fit_the_batch_is_one_line_and_writes_nothing(tmp_path, capsys):
    code = main(["train", "method=mocov2", "method.queue_size=1000", f"out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "method.queue_size=1000" in err
    assert "method.queue_size=1024" in err  # the suggested fix
    assert not any(tmp_path.iterdir())
