"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch

from ssl_zoo.config.load import load_config

from tiny import tiny_overrides


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*extra: str, method: str = "byol"):
        return load_config(tiny_overrides(tmp_path, *extra, method=method))
    return make


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)
