"""logger=tensorboard: per-epoch scalars as in metrics.csv, per-step loss and lr, final accuracies and an HParams
session with the run's hyper-parameters."""

from __future__ import annotations

import pytest

from ssl_zoo.config.load import load_config
from ssl_zoo.launch.run import train

from tiny import tiny_overrides


def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = train(load_config(tiny_overrides(tmp_path, "logger=tensorboard", "trainer.epochs=1",
                                               "trainer.log_every=5", "trainer.warmup_epochs=0", "monitor.num_images=32")))
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss", "z_std", "images_per_s"} <= scalars
    assert {"step/loss", "step/lr", "final/knn_top1", "final/linear_top1"} <= scalars
    steps = [e.step for e in events.Scalars("step/loss")]
    assert steps == [5, 10, 15, 20]  # digits: 21 steps of 64 images
    lrs = [e.value for e in events.Scalars("step/lr")]
    assert lrs[0] > lrs[-1] > 0  # the cosine schedule, step by step
    assert events.Scalars("final/knn_top1")[0].value == pytest.approx(
        __import__("json").loads((run_dir / "results.json").read_text())["knn_top1"])
    plugins = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugins
    info = plugins["_hparams_/session_start_info"]
    assert b"method.name" in info and b"byol" in info and b"trainer.lr" in info
