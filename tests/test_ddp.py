"""DDP without SLURM: two gloo processes under torchrun train the run one process would train with their global
batch (sharded epoch order, sharded views, SyncBN, LR of the global batch); only rank 0 writes.

Stated tolerance: 1e-4 relative, after one epoch (5 steps of a 256-image global batch). Only float summation
order differs between the two setups; the weights then agree to ~2e-6, as closely as one process on 1 vs 2
threads, while BN statistics per process (no SyncBN) differ by 1e-1 and more (benchmarks/DDP.md). Longer runs of
this tiny BYOL drift apart through training's own chaos (1e-3 after 10 steps, threads alone: 6e-3).
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.data.views import build_view_maker
from ssl_zoo.runs.identity import run_dir_for
from ssl_zoo.train.build import build_trainer
from ssl_zoo.train.ddp import shard_views

from tiny import tiny_overrides

# float32 sums in another order (two half-batch gradients all-reduced vs one whole batch) grow over a run's steps:
# measured on AMD EPYC, torch 2.14.1, one thread per process: 2.4e-4 of a tensor's largest entry (BYOL, torchrun)
# and 2.6e-3 (MoCo v2 over SLURM, a BN bias whose entries are ~1e-2). Unsynced BN is off by 1.3e-1
# (launcher.sync_bn=false), keys of one rank only in MoCo's queue by the size of the keys.
REL_TOL = 1e-2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same_training(ddp_dir, single_dir, rel_tol: float = REL_TOL) -> None:
    """Final weights (every float tensor of the method, target side and queues included) within rel_tol of each
    tensor's largest entry; per-epoch loss within rel_tol; identical LR (the global batch's)."""
    a = torch.load(ddp_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(single_dir / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] and a["world_size"] == 2 and b["world_size"] == 1
    assert a["method"].keys() == b["method"].keys()
    for key, want in b["method"].items():
        got = a["method"][key]
        if not want.is_floating_point():
            assert torch.equal(got, want), key
            continue
        err = (got.float() - want.float()).abs().max().item()
        assert err <= rel_tol * want.float().abs().max().item() + 1e-7, (key, err)
    rows_a = list(csv.DictReader(open(ddp_dir / "metrics.csv")))
    rows_b = list(csv.DictReader(open(single_dir / "metrics.csv")))
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        assert float(ra["lr"]) == pytest.approx(float(rb["lr"]), rel=1e-9)
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=rel_tol)


def test_shard_views_are_the_rows_of_the_global_views():
    cfg = load_config(["method=byol", "data=digits", "views=multicrop"])  # two global crops and local crops
    maker = build_view_maker(cfg.views, list(cfg.data.mean), list(cfg.data.std))
    x = torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8)
    full = maker(x, torch.Generator().manual_seed(5))
    parts = [shard_views(maker, x[r * 4:(r + 1) * 4], torch.Generator().manual_seed(5), r, 3) for r in range(3)]
    assert len(parts[0]) == len(full) > 2
    for v, view in enumerate(full):
        assert torch.equal(torch.cat([p[v] for p in parts]), view), v


def test_resume_on_another_number_of_processes_is_refused(tmp_path):
    cfg = load_config(tiny_overrides(tmp_path))
    from ssl_zoo.data.datasets import load_data

    trainer = build_trainer(cfg, load_data(cfg.data), run_dir_for(cfg))
    state = trainer.state()
    state["world_size"] = 2
    from ssl_zoo.runs.checkpoint import save_checkpoint

    save_checkpoint(trainer.run_dir, state)
    with pytest.raises(UserError, match="2 process"):
        trainer.restore()


@pytest.mark.slow
@pytest.mark.parametrize("ablation", ["none", "predictor_directpred"])  # DirectPred: F-hat of the global batch
def test_torchrun_two_processes_match_one_process(tmp_path, ablation):
    common = ["deterministic=true", "trainer.epochs=1", "eval.enabled=false", f"ablation={ablation}"]
    ddp_args = tiny_overrides(tmp_path / "ddp", *common, "trainer.batch_size=128", "launcher.sync_bn=true")
    one_args = tiny_overrides(tmp_path / "one", *common, "trainer.batch_size=256")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={_free_port()}", "-m", "ssl_zoo.cli", "train", *ddp_args],
                         env=env, capture_output=True, text=True, timeout=400)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("finished") == 1  # rank 0 reports, rank 1 stays quiet
    one = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", *one_args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    ddp_dir, one_dir = run_dir_for(load_config(ddp_args)), run_dir_for(load_config(one_args))
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [ddp_dir.name]  # one run dir, nothing else
    assert_same_training(ddp_dir, one_dir)
