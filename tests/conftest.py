"""Shared fixtures, and how the suite shares two cores when run in parallel (pytest-xdist, scripts/test.sh)."""

from __future__ import annotations

import os

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


def pytest_configure(config):
    # Under pytest-xdist each worker gets one thread (and so do the processes it starts): two workers with two
    # spin-waiting threads each on two cores run torch several times slower than one worker alone.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    # The tests that submit to the one test SLURM share its CPUs: one worker runs them all, one after another.
    # The slow end-to-end tests start first so that no worker is left with a long one at the end.
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
