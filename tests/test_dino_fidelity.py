"""DINO as published: the teacher-temperature schedule of the official code, step by step, and a GELU head."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.methods.dino import teacher_temp_at
from ssl_zoo.train.build import build_method


@pytest.mark.parametrize("epochs,warmup", [(40, 30), (5, 5), (3, 1), (4, 0)])
def test_teacher_temperature_matches_the_official_schedule(epochs, warmup):
    # main_dino.py: np.concatenate((np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
    #                               np.ones(epochs - warmup_teacher_temp_epochs) * teacher_temp))[epoch]
    official = np.concatenate((np.linspace(0.04, 0.07, warmup), np.ones(epochs - warmup) * 0.07))
    steps_per_epoch = 7
    total = epochs * steps_per_epoch
    for step in range(total):
        assert teacher_temp_at(step / total, epochs, 0.04, 0.07, warmup) == pytest.approx(
            official[step // steps_per_epoch], abs=1e-12)


def test_dino_head_uses_gelu_unless_configured(tmp_path):
    base = ["method=dino", "encoder=small_cnn", "encoder.width=8", "method.head.hidden_dim=16",
            "method.head.out_dim=8", "method.head.num_prototypes=16"]
    acts = {type(m) for m in build_method(load_config(base)).head.mlp}
    assert nn.GELU in acts and nn.ReLU not in acts
    acts = {type(m) for m in build_method(load_config([*base, "method.head.activation=relu"])).head.mlp}
    assert nn.ReLU in acts and nn.GELU not in acts
    with pytest.raises(UserError, match="method.head.activation"):
        load_config([*base, "method.head.activation=tanh"])
