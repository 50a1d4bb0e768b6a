"""launcher=local sweeps: the same interface as launcher=slurm (a manifest in <out_dir>/jobs, `ssl-zoo status`),
ended runs skipped when the sweep is started again, runs another process holds skipped with one line each (exit
5), bad sweeps (a bad checkpoint in any run) refused before anything runs or is submitted; and stop signals during
a SLURM submission (submitit's executor faked)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf
from test_run_ownership_and_status import held_by_child

from ssl_zoo.cli import main
from ssl_zoo.config.load import load_config
from ssl_zoo.launch.local_sweep import EXIT_NOT_ALL_RAN
from ssl_zoo.launch.sweep_files import read_manifests
from ssl_zoo.runs.identity import run_dir_for

from in_process import signal_inside
from tiny import TINY, tiny_overrides

HEADS = ["method.predictor.hidden_dim=64", "method.predictor.out_dim=32"]


def test_local_sweep_status_and_rerun_skips_ended_runs(tmp_path, capsys):
    args = ["train", "-m", "seed=0,1", *TINY, *HEADS, "trainer.epochs=1", "eval.enabled=false",
            f"out_dir={tmp_path}"]
    assert main(args) == 0
    assert "sweep: 2 run(s)" in capsys.readouterr().out
    assert main(["status", str(tmp_path), "--json"]) == 0
    tasks = json.loads(capsys.readouterr().out)
    assert [(t["state"], t["epoch"], t["epochs"]) for t in tasks] == [("finished", 1, 1)] * 2
    assert main(args) == 0  # the same sweep again: nothing left to run
    out = capsys.readouterr().out
    assert "sweep: 0 run(s)" in out and "2 already ended: skipped" in out
    assert main(["status", str(tmp_path)]) == 0
    assert "2 run(s) in" in capsys.readouterr().out


def test_interrupted_local_sweep_shows_stopped(tmp_path, capsys):
    manifest = {"id": "local-x", "launcher": "local", "submitted": "2026-01-01T00:00:00", "host": "elsewhere",
                "pid": 1, "command": "", "skipped": [],
                "tasks": [{"index": 0, "job_id": None, "run_dir": "r0", "overrides": [], "epochs": 3}]}
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "sweep-local-x.json").write_text(json.dumps(manifest))
    (tmp_path / "r0").mkdir()
    (tmp_path / "r0" / "metrics.csv").write_text("epoch,step,loss\n1,10,2.5\n")
    assert main(["status", str(tmp_path), "--json"]) == 0
    (task,) = json.loads(capsys.readouterr().out)
    assert task["state"] == "stopped" and task["epoch"] == 1 and task["loss"] == 2.5


def test_crashed_local_run_shows_failed_with_its_error(tmp_path, capsys):
    manifest = {"id": "local-x", "launcher": "local", "submitted": "2026-01-01T00:00:00", "host": "elsewhere",
                "pid": 1, "command": "", "skipped": [],
                "tasks": [{"index": 0, "job_id": None, "run_dir": "r0", "overrides": [], "epochs": 3}]}
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "sweep-local-x.json").write_text(json.dumps(manifest))
    (tmp_path / "r0").mkdir()
    (tmp_path / "r0" / "metrics.csv").write_text("epoch,step,loss\n1,10,2.5\n")
    (tmp_path / "r0" / "results.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: oom"}))
    assert main(["status", str(tmp_path), "--json"]) == 0
    (task,) = json.loads(capsys.readouterr().out)
    assert task["state"] == "failed" and task["note"] == "RuntimeError: oom"


def test_status_of_a_directory_without_sweep_is_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "status", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "no sweep" in out.stderr


# --- runs another process holds, checkpoints checked up front -----------------------------------------------
def _cell_dir(tmp_path, *extra: str):
    return run_dir_for(load_config([*tiny_overrides(tmp_path, *QUICK), *extra]))


QUICK = ["device=cpu", "trainer.steps=3", "eval.enabled=false", "monitor.num_images=64"]


def test_a_held_run_in_the_middle_is_skipped_and_the_sweep_goes_on(tmp_path, capsys):
    sweep = ["train", "-m", *tiny_overrides(tmp_path, *QUICK), "seed=0,1,2"]
    first = _cell_dir(tmp_path, "seed=0")
    assert main(["train", *tiny_overrides(tmp_path, *QUICK), "seed=0"]) == 0
    (first / "results.json").unlink()  # stopped before its end: the sweep resumes it from its real checkpoint,
    assert (first / "checkpoints" / "prev.pt").is_file()  # the one before last.pt, since last.pt is now corrupt
    (first / "checkpoints" / "last.pt").write_bytes(b"\0" * 100)
    capsys.readouterr()
    with held_by_child(_cell_dir(tmp_path, "seed=1")) as pid:
        assert main(sweep) == EXIT_NOT_ALL_RAN
    out, err = capsys.readouterr()
    assert "resuming at step 0/3" in out  # preflight accepted prev.pt as the run's start does
    lines = err.strip().splitlines()
    assert len(lines) == 3, lines
    assert "last.pt is unreadable" in lines[0] and "resuming from prev.pt (step 0)" in lines[0]  # once: the start's
    assert lines[1].startswith("ssl-zoo: skipped run 2/3 (seed=1): ") and f"in use by pid {pid}" in lines[1]
    assert lines[2].startswith("ssl-zoo: not all runs of the sweep ran: 1 of 3 skipped, in use by another process "
                               "(run 2/3 (seed=1))")
    for seed in (0, 2):
        results = json.loads((_cell_dir(tmp_path, f"seed={seed}") / "results.json").read_text())
        assert results["status"] == "finished", seed
    assert not (_cell_dir(tmp_path, "seed=1") / "config.yaml").exists()  # the held run was left alone

    assert main(sweep) == 0  # free again: the same command runs what is left
    out, err = capsys.readouterr()
    assert "sweep: 1 run(s)" in out and "2 already ended: skipped" in out and err == ""


def _resumable_looking(cfg, checkpoint: bytes) -> None:
    """The run directory of `cfg` (its config.yaml) with `checkpoint` as checkpoints/last.pt."""
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(checkpoint)


def _not_fitting() -> bytes:
    """A whole checkpoint with every key resuming reads, but weights of another model."""
    buf = io.BytesIO()
    torch.save({"method": {"backbone.elsewhere": torch.zeros(3)}, "optimizer": {"state": {}, "param_groups": []},
                "step": 5, "probe": {}, "probe_opt": {}, "rows": [], "elapsed": 1.0, "sums": {}}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("checkpoint, reason", [(b"PK\x03\x04 not a checkpoint" * 50, "no readable checkpoint in"),
                                                (_not_fitting(), "does not fit this config (RuntimeError)")],
                         ids=["corrupt", "not-fitting"])
@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_a_bad_checkpoint_in_the_last_run_refuses_the_sweep_before_its_first_run(tmp_path, capsys, monkeypatch,
                                                                                  checkpoint, reason, launcher):
    _fake_slurm(monkeypatch, calls := [])
    root = tmp_path / "sweep"
    args = tiny_overrides(root, *QUICK, f"launcher={launcher}")
    _resumable_looking(load_config([*args, "seed=2"]), checkpoint)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert main(["train", "-m", *args, "seed=0,1,2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ssl-zoo: error: run 3/3 (seed=2): "), err
    assert reason in err[0] and err[0].endswith("no run of the sweep was started"), err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before and calls == []  # nothing ran or was sent


# --- stop signals during a SLURM submission (submitit's executor faked: no SLURM needed) --------------------
class _Job:
    def __init__(self, job_id: str):
        self.job_id = job_id


def _fake_slurm(monkeypatch, calls: list, during=None) -> None:
    """launcher=slurm without SLURM: the executor's submit_array records its call (and runs `during` first, as
    if sbatch were running) and answers with array job 77."""
    from ssl_zoo.launch import launcher

    class Executor:
        def submit_array(self, tasks):
            calls.append(len(tasks))
            if during is not None:
                during()
            return [_Job(f"77_{i}") for i in range(len(tasks))]

    monkeypatch.setattr(launcher, "_check_slurm", lambda launcher: None)
    monkeypatch.setattr(launcher, "executor", lambda launcher, folder: Executor())
    monkeypatch.setattr("ssl_zoo.launch.slurm_queue.squeue", lambda: {})


SLURM_SWEEP = ["launcher=slurm", "seed=0,1"]


@pytest.mark.parametrize("phase, signum, said", [
    ("preflight", signal.SIGTERM, "stopped before submitting: none of the sweep's 2 run(s) submitted"),
    ("manifest", signal.SIGINT, "stopped before sbatch: none of the 2 task(s) submitted"),
])
def test_a_stop_signal_before_sbatch_submits_nothing_writes_nothing_and_exits_3(tmp_path, capsys, monkeypatch,
                                                                               phase, signum, said):
    from ssl_zoo.launch import launcher, preflight

    _fake_slurm(monkeypatch, calls := [])
    if phase == "preflight":  # while every run is checked (data loaded, weights downloaded): stops at once
        signal_inside(monkeypatch, preflight, "check_cells", signum)
    else:  # Ctrl-C while the manifest is written: the boundary before sbatch stops it and removes the file
        signal_inside(monkeypatch, launcher, "write_manifest", signum)
    assert main(["train", "-m", *tiny_overrides(tmp_path / "grid", *QUICK), *SLURM_SWEEP]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ssl-zoo: {said}") and ", nothing written; run the same command " \
        "again to resume" in err[0], err
    assert calls == [] and not (tmp_path / "grid").exists()


def test_stop_signals_during_sbatch_wait_for_it_and_the_submission_is_whole(tmp_path, capsys, monkeypatch):
    seen = {}

    def sbatch_running() -> None:
        seen["blocked"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        child = subprocess.run([sys.executable, "-c", "import signal; "
                                "print(sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])))"],
                               capture_output=True, text=True, timeout=60)
        seen["child"] = json.loads(child.stdout)  # what sbatch, started here, inherits
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGINT):  # a stop, then Ctrl-C twice
            os.kill(os.getpid(), signum)
            time.sleep(0.05)

    _fake_slurm(monkeypatch, calls := [], sbatch_running)
    handler = signal.getsignal(signal.SIGINT)
    assert main(["train", "-m", *tiny_overrides(tmp_path / "grid", *QUICK), *SLURM_SWEEP]) == 0
    out, err = capsys.readouterr()
    assert calls == [2] and "submitted SLURM job 77: 2 task(s)" in out
    assert {signal.SIGINT, signal.SIGTERM} <= seen["blocked"] and {2, 15} <= set(seen["child"])
    (line,) = err.strip().splitlines()
    assert "a stop signal (SIGTERM, SIGINT) arrived while sbatch was submitting" in line and "scancel 77" in line
    (manifest,) = read_manifests(tmp_path / "grid")
    assert manifest["id"] == "77" and [t["job_id"] for t in manifest["tasks"]] == ["77_0", "77_1"]
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's handlers are back
