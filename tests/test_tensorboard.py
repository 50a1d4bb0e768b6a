"""logger=tensorboard writes event files with the same per-epoch scalars as metrics.csv."""

from __future__ import annotations

import pytest

from ssl_zoo.config import load_config
from ssl_zoo.run import train

from tiny import tiny_overrides


def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = train(load_config(tiny_overrides(tmp_path, "logger=tensorboard", "trainer.epochs=1",
                                               "eval.enabled=false")))
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"loss", "z_std", "images_per_s"} <= set(events.Tags()["scalars"])
