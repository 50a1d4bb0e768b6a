"""The trainer's GPU path, checked on the CPU: views made a step ahead (the side-stream prefetch) and
trainer.compile change nothing but speed; on CUDA (marker gpu) a step never syncs the host."""

from __future__ import annotations

import functools

import pytest
import torch

from ssl_zoo.config.load import load_config
from ssl_zoo.data.datasets import load_data
from ssl_zoo.train.build import build_trainer
from ssl_zoo.train.prefetch import ViewPrefetcher
from ssl_zoo.train.trainer import Trainer

from tiny import tiny_overrides

DINO_TINY = ["method.head.hidden_dim=64", "method.head.out_dim=32", "method.head.num_prototypes=64",
             "views.crops.local.n=2"]


def _trainer(tmp_path, *extra: str, method: str = "byol") -> Trainer:
    overrides = tiny_overrides(tmp_path, "deterministic=true", "trainer.batch_size=128", "trainer.epochs=1",
                               "eval.enabled=false", *extra, method=method)
    if method == "dino":
        overrides = [o for o in overrides if not o.startswith("method.projector")] + DINO_TINY
    cfg = load_config(overrides)
    return build_trainer(cfg, load_data(cfg.data), tmp_path / "run")


def test_prefetcher_makes_each_step_once_and_one_ahead():
    made = []
    ahead = ViewPrefetcher(lambda i: made.append(i) or [torch.full((1,), float(i))], torch.device("cpu"), end=3)
    got = []
    for i in range(3):
        got.append(int(ahead.get(i)[0]))
        assert made == list(range(min(i + 2, 3)))  # step i + 1 is made before step i's views are used
    assert got == [0, 1, 2]
    made.clear()
    assert int(ViewPrefetcher(lambda i: made.append(i) or [torch.zeros(1)], torch.device("cpu"), 9).get(5)[0]) == 0
    assert made == [5, 6]  # a resumed epoch starts at its first step


def test_prefetched_views_train_bit_identically(tmp_path):
    inline, ahead = _trainer(tmp_path / "inline"), _trainer(tmp_path / "ahead")
    ahead.prefetch_views = True
    made_at = []  # (step the views are for, trainer step when they were made)
    make = ahead._make_views
    ahead._make_views = lambda x, step: made_at.append((step, ahead.step)) or make(x, step)
    inline._run_epoch(0)
    ahead._run_epoch(0)
    assert ahead.step == inline.step == inline.steps_per_epoch
    assert all(made == max(step - 1, 0) for step, made in made_at) and len(made_at) == ahead.steps_per_epoch
    a, b = inline.method.state_dict(), ahead.method.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert inline.sums.keys() == ahead.sums.keys()
    assert all(torch.equal(inline.sums[k], ahead.sums[k]) for k in inline.sums if k != "seconds")


@pytest.mark.parametrize("method", ["byol", "dino"])
def test_compile_traces_each_part_once_not_every_step(tmp_path, monkeypatch, method):
    # Dynamo with its eager backend: the same tracing and guards as inductor, without code generation.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    compiled, eager = _trainer(tmp_path / "c", "trainer.compile=true", method=method), _trainer(tmp_path / "e", method=method)
    x, y = compiled.pretrain.images[:128], compiled.pretrain.labels[:128]
    counters = torch._dynamo.utils.counters
    try:
        for step in range(4):
            compiled._train_step(x, y)
            eager._train_step(x, y)
            if step == 1:
                graphs = counters["stats"]["unique_graphs"]
        # progress, lr and tau change every step: a step traced per value would add graphs here
        assert graphs > 0 and counters["stats"]["unique_graphs"] == graphs
        a, b = compiled.method.state_dict(), eager.method.state_dict()
        assert a.keys() == b.keys()  # compiled in place: checkpoints stay interchangeable
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5), k
    finally:
        torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["byol", "dino"])
def test_cuda_steps_never_sync_the_host(tmp_path, method):
    tr = _trainer(tmp_path, "device=cuda", "deterministic=false", method=method)
    images, labels = tr.pretrain.images, tr.pretrain.labels
    order = torch.arange(len(images), device=tr.device)
    ahead = ViewPrefetcher(lambda i: tr._make_views(images[order[i * 128:(i + 1) * 128]], i), tr.device, 6)
    tr._train_step(None, labels[:128], ahead.get(0))  # first use: optimizer state, cached view constants
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call (.item(), pageable copies) raises
    try:
        for i in range(1, 6):
            tr._train_step(None, labels[i * 128:(i + 1) * 128], ahead.get(i))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    assert torch.isfinite(tr.sums["loss"]) and tr.host_sums["n"] == 6
