"""Training and evaluating on a streamed image folder, end to end: exact resume (mid-epoch and after SIGKILL),
trainer.steps, bad samples, `ssl-zoo train` + `ssl-zoo eval` from the command line."""

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
from ssl_zoo.data.streaming import synthetic
from ssl_zoo.launch.run import train
from ssl_zoo.runs.identity import run_dir_for
from ssl_zoo.train.trainer import Preempted, Trainer

from tiny import tiny_overrides

STEPS = 12  # 41 images, global batch 8: 5 steps per epoch, so 3 epochs, the last one partial


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream_e2e")
    return synthetic.write_folder(root / "folder", ["c000", "c001", "c002"], 12, 3, odd=True, sizes=(48, 120))


def _args(tmp_path, folder, *extra):
    base = [a for a in tiny_overrides(tmp_path) if a not in ("data=digits", "trainer.batch_size=64")]
    return [*base, "data=imagefolder", f"data.root={folder}", f"data.index_dir={tmp_path / 'index'}",
            "data.image_size=32", "data.workers=2", "data.max_bad_fraction=0.1", "trainer.batch_size=8",
            f"trainer.steps={STEPS}", "monitor.num_images=8", "deterministic=true", *extra]


def _weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["method"]


def _assert_same_weights(a, b):
    ref, got = _weights(a), _weights(b)
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key


def test_steps_run_and_a_mid_epoch_stop_resumes_bit_identically(tmp_path, folder, monkeypatch):
    ref_dir = train(load_config(_args(tmp_path / "ref", folder, "eval.enabled=false")))
    rows = list(csv.DictReader(open(ref_dir / "metrics.csv")))
    assert [(int(r["epoch"]), int(r["step"])) for r in rows] == [(1, 5), (2, 10), (3, 12)]
    bad = (ref_dir / "bad_samples.txt").read_text().splitlines()
    assert len(bad) == 1 and bad[0].split("\t")[1].endswith("odd_corrupt.JPEG")

    cfg = load_config(_args(tmp_path / "stopped", folder, "eval.enabled=false"))
    step = Trainer._train_step

    def stop_at_7(self, *a, **kw):  # as a SIGTERM at step 7 would: checkpoint mid-epoch 2, exit
        out = step(self, *a, **kw)
        if self.step == 7:
            self.stop_code = 1
        return out

    monkeypatch.setattr(Trainer, "_train_step", stop_at_7)
    with pytest.raises(Preempted):
        train(cfg)
    assert torch.load(run_dir_for(cfg) / "checkpoints" / "last.pt", weights_only=True)["step"] == 7
    monkeypatch.undo()
    _assert_same_weights(ref_dir, train(cfg))
    assert (run_dir_for(cfg) / "metrics.csv").read_text().count("\n") == 4


def test_past_max_bad_fraction_the_run_stops_with_one_line(tmp_path, folder):
    from ssl_zoo.common.errors import UserError

    cfg = load_config(_args(tmp_path, folder, "data.max_bad_fraction=0.0", "eval.enabled=false"))
    with pytest.raises(UserError, match=r"1 of 41 samples could not be read .* data.max_bad_fraction=0") as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert "odd_corrupt.JPEG" in (run_dir_for(cfg) / "bad_samples.txt").read_text()


@pytest.mark.slow
def test_sigkill_then_rerun_matches_uninterrupted_and_eval_from_the_cli(tmp_path, folder):
    steps = ["trainer.steps=40", "eval.enabled=false"]
    ref_dir = train(load_config(_args(tmp_path / "ref", folder, *steps)))
    args = _args(tmp_path / "killed", folder, *steps)
    run_dir = run_dir_for(load_config(args))
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, "-m", "ssl_zoo.cli", "train", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (run_dir / "metrics.csv").exists():  # the first epoch is done: kill inside a later one
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] < 40, "the kill came too late to test a resume"
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    _assert_same_weights(ref_dir, run_dir)

    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "eval", f"run_dir={run_dir}"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and results["total_steps"] == 40
    assert 0 <= results["knn_top1"] <= 100 and results["linear"]["n_train"] == 41


def test_cli_train_and_eval_on_a_streamed_folder(tmp_path, folder):
    args = _args(tmp_path, folder, "trainer.steps=6", "deterministic=false")
    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", *args], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "kNN top-1" in out.stdout
    run_dir = run_dir_for(load_config(args))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and results["linear"]["n_train"] == 41
    ev = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "eval", f"run_dir={run_dir}", "eval.max_train=20"],
                        capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    assert json.loads((run_dir / "results.json").read_text())["linear"]["n_train"] == 20


def test_cli_bad_folder_is_one_line_and_writes_nothing(tmp_path, folder):
    broken = tmp_path / "broken"
    synthetic.write_folder(broken, ["a", "b"], 2, 1, sizes=(20, 30))
    (broken / "train" / "empty").mkdir()
    args = [*_args(tmp_path / "out", broken)]
    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", *args], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and out.stderr.startswith("ssl-zoo: error: class folder")
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "index").exists()


@pytest.mark.slow
def test_torchrun_two_processes_on_a_streamed_folder_match_one_process(tmp_path, folder):
    from test_ddp import _free_port, assert_same_training

    common = ["trainer.steps=5", "eval.enabled=false", "data.workers=0"]
    ddp_args = _args(tmp_path / "ddp", folder, *common, "trainer.batch_size=4", "launcher.sync_bn=true")
    one_args = _args(tmp_path / "one", folder, *common)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={_free_port()}", "-m", "ssl_zoo.cli", "train", *ddp_args],
                         env=env, capture_output=True, text=True, timeout=400)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", *one_args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert_same_training(run_dir_for(load_config(ddp_args)), run_dir_for(load_config(one_args)))
