"""logger=wandb: an offline wandb run inside the run directory with the per-epoch rows, step/loss and step/lr,
the final accuracies and the config; refused in one line, before anything is written, without wandb."""

from __future__ import annotations

import importlib.util
import json

import pytest

from ssl_zoo.cli import main
from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.launch.run import train

from tiny import tiny_overrides


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = train(load_config(tiny_overrides(tmp_path, "logger=wandb", "trainer.epochs=1", "trainer.log_every=5",
                                               "monitor.num_images=32")))
    [offline] = list((run_dir / "wandb").glob("offline-run-*"))
    [log] = list(offline.glob("run-*.wandb"))  # what `wandb sync` uploads; offline runs write no summary json
    data = log.read_bytes()
    results = json.loads((run_dir / "results.json").read_text())
    assert _summary_value(data, "final/knn_top1") == pytest.approx(results["knn_top1"])
    assert _summary_value(data, "final/linear_top1") == pytest.approx(results["linear_top1"])
    assert all(key.encode() in data for key in ("step/loss", "step/lr", "z_std", "trainer"))


def _summary_value(data: bytes, key: str) -> float:
    """The JSON value logged under `key` in a wandb log: protobuf item {key, value_json (field 16)}."""
    at = data.rindex(key.encode()) + len(key)
    assert data[at:at + 2] == b"\x82\x01"  # field 16, length-delimited
    return float(json.loads(data[at + 3:at + 3 + data[at + 2]]))


def test_wandb_missing_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install 'ssl-zoo\[wandb\]'"):
        load_config(tiny_overrides(tmp_path, "logger=wandb"))
    assert main(["train", *tiny_overrides(tmp_path, "logger=wandb")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and list(tmp_path.iterdir()) == []
