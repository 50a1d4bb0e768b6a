"""The collapse ablations push the collapse metrics the way the papers say, on a tiny end-to-end run (digits,
4-channel-wide CNN, a few dozen steps): SimSiam without stop-gradient ends with z_std far below the default's
(SimSiam Fig. 2), DINO without centering ends with a lower teacher entropy (one dimension dominates), VICReg
without its variance term collapses, SwAV without Sinkhorn puts every image in one prototype. A high
learning rate and, for DINO, a fast teacher (tau 0.9) make the few steps enough."""

from __future__ import annotations

import csv

import pytest

from ssl_zoo.config.load import load_config
from ssl_zoo.launch.run import train

BASE = ["data=digits", "encoder=small_cnn", "encoder.width=8", "trainer.batch_size=32", "eval.enabled=false",
        "eval.online_probe=false", "progress_bar=false", "monitor.num_images=256"]
SIMSIAM = ["method=simsiam", "trainer.epochs=2", "trainer.lr=0.5", "method.projector.hidden_dim=64",
           "method.projector.out_dim=64", "method.predictor.hidden_dim=16", "method.predictor.out_dim=64"]
DINO = ["method=dino", "trainer.epochs=1", "trainer.lr=0.5", "method.head.hidden_dim=64", "method.head.out_dim=32",
        "method.head.num_prototypes=256", "method.tau_base=0.9", "method.warmup_teacher_temp_epochs=0.5",
        "method.freeze_last_layer=0.0", "views.crops.local.n=2"]


def _last_row(tmp_path, *overrides: str) -> dict[str, float]:
    run_dir = train(load_config([*BASE, *overrides, f"out_dir={tmp_path}"]))
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)}


@pytest.mark.slow
def test_simsiam_without_stop_gradient_collapses(tmp_path):
    default = _last_row(tmp_path, *SIMSIAM, "ablation=none")
    ablated = _last_row(tmp_path, *SIMSIAM, "ablation=no_stopgrad")
    assert default["z_std"] > 0.3 * default["z_std_ref"]  # the default spreads out
    assert ablated["z_std"] < 0.25 * default["z_std"]


@pytest.mark.slow
def test_dino_without_centering_has_lower_teacher_entropy(tmp_path):
    default = _last_row(tmp_path, *DINO, "ablation=none")
    ablated = _last_row(tmp_path, *DINO, "ablation=no_centering")
    assert ablated["teacher_entropy"] < 0.5 * default["teacher_entropy"]


@pytest.mark.slow
def test_vicreg_without_the_variance_term_collapses(tmp_path):
    heads = ["method=vicreg", "trainer.epochs=2", "trainer.lr=0.3", "method.projector.hidden_dim=64", "method.projector.out_dim=64"]
    default = _last_row(tmp_path, *heads, "ablation=none")
    ablated = _last_row(tmp_path, *heads, "ablation=no_variance")
    assert ablated["z_std"] < 0.25 * default["z_std"], (default["z_std"], ablated["z_std"])


@pytest.mark.slow
def test_swav_without_sinkhorn_maps_every_image_to_one_prototype(tmp_path):
    heads = ["method=swav", "trainer.epochs=2", "trainer.lr=0.3", "method.projector.hidden_dim=64",
             "method.projector.out_dim=32", "method.num_prototypes=64", "method.queue_length=0",
             "views.crops.local.n=2", "method.freeze_prototypes_epochs=0.2"]
    default = _last_row(tmp_path, *heads, "ablation=none")
    ablated = _last_row(tmp_path, *heads, "ablation=no_sinkhorn")
    assert ablated["prototypes_used"] < 1.5 <= 5 < default["prototypes_used"], (default, ablated)
