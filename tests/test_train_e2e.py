"""End to end: `ssl-zoo train` writes the run directory DESIGN.md promises, and resume is exact."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ssl_zoo.config.load import load_config
from ssl_zoo.launch.run import train
from ssl_zoo.runs.identity import run_dir_for

from tiny import tiny_overrides


@pytest.mark.parametrize("method", ["byol", "simsiam"])
def test_tiny_run_writes_the_run_directory(tmp_path, method):
    cfg = load_config(tiny_overrides(tmp_path, method=method))
    run_dir = train(cfg)
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "last.pt").exists()
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("step", "loss", "lr", "tau" if method == "byol" else "loss", "z_std", "images_per_s",
                "online_probe_acc"):
        assert key in rows[0]
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("method", "data", "encoder", "epochs", "seed", "knn_top1", "linear_top1", "wall_s", "images_per_s"):
        assert key in results
    assert results["method"] == method and results["status"] == "finished"
    assert 0 <= results["knn_top1"] <= 100


def test_cli_prints_trained_and_random_init(tmp_path):
    args = [a for a in tiny_overrides(tmp_path, "trainer.epochs=1") if a != "eval.random_init=false"]
    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", *args], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "trained" in out.stdout and "random_init" in out.stdout and "kNN top-1" in out.stdout


def test_finished_run_is_never_overwritten(tmp_path):
    cfg = load_config(tiny_overrides(tmp_path, "trainer.epochs=1"))
    run_dir = train(cfg)
    before = (run_dir / "results.json").read_bytes()
    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", *tiny_overrides(tmp_path, "trainer.epochs=1")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "already finished" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert (run_dir / "results.json").read_bytes() == before


def test_crash_marks_run_failed_and_a_rerun_finishes_it(tmp_path, monkeypatch):
    import ssl_zoo.launch.run as run_module

    def crash(trainer):
        raise RuntimeError("out of memory (simulated)")

    cfg = load_config(tiny_overrides(tmp_path, "trainer.epochs=1"))
    monkeypatch.setattr(run_module, "evaluate_run", crash)
    with pytest.raises(RuntimeError):
        train(cfg)
    run_dir = run_dir_for(cfg)
    failed = json.loads((run_dir / "results.json").read_text())
    assert failed["status"] == "failed" and "out of memory" in failed["error"]
    monkeypatch.undo()
    train(cfg)  # the same command again: resumes from the saved last step and evaluates
    assert json.loads((run_dir / "results.json").read_text())["status"] == "finished"


def _final_weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["method"]


def test_killed_mid_epoch_then_resumed_matches_uninterrupted(tmp_path):
    extra = ["deterministic=true", "trainer.epochs=3", "trainer.batch_size=32", "eval.enabled=false"]
    ref_cfg = load_config(tiny_overrides(tmp_path / "ref", *extra))
    ref_dir = train(ref_cfg)

    args = tiny_overrides(tmp_path / "killed", *extra)
    run_dir = run_dir_for(load_config(args))
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "ssl_zoo.cli", "train", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "last.pt").exists():  # the step-0 checkpoint: training has begun
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    time.sleep(1.5)  # some steps in, usually mid-epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] < 3 * (1347 // 32), "the kill came too late to test a resume"

    resumed = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", *args], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    ref, got = _final_weights(ref_dir), _final_weights(run_dir)
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
