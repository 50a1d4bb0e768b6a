"""Against a real SLURM (scripts/start_slurm.sh starts one on this machine): sweeps as one array job, status,
compare, requeue with exact resume, a 2-task gloo DDP job, real failures not requeued. Skipped without sbatch or
an idle node. Tasks ask for one CPU each, so the one 2-CPU node runs two at a time."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_ddp import assert_same_training

from ssl_zoo.commands.status import task_states
from ssl_zoo.config.load import load_config
from ssl_zoo.runs.identity import run_dir_for

from tiny import TINY


def _no_slurm() -> str | None:
    if shutil.which("sbatch") is None:
        return "no sbatch (apt-get install slurm-wlm munge; bash scripts/start_slurm.sh)"
    out = subprocess.run(["sinfo", "-h", "-t", "idle,mixed", "-o", "%n"], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return "no idle SLURM node (bash scripts/start_slurm.sh)"
    return None


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(_no_slurm() is not None, reason=str(_no_slurm()))]

HEADS = ["method.predictor.hidden_dim=64", "method.predictor.out_dim=32"]
SLURM = ["launcher=slurm", "launcher.cpus_per_task=1", "launcher.timeout_min=10"]
ENDED = {"finished", "diverged", "failed", "stopped"}


@pytest.fixture
def submitted():
    """Job ids the test submitted; whatever is still queued at the end is cancelled."""
    ids: list[str] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssl_zoo.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def submit(submitted: list[str], *args: str) -> str:
    out = cli("train", *args)
    assert out.returncode == 0, out.stderr
    job = re.search(r"submitted SLURM job (\d+)", out.stdout)
    assert job, out.stdout
    submitted.append(job.group(1))
    return job.group(1)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ended(sweep: Path, n: int):
    tasks = task_states(sweep)
    return tasks if len(tasks) == n and all(t["state"] in ENDED for t in tasks) else None


def rows(run_dir: Path) -> int:
    try:
        return len(list(csv.DictReader(open(run_dir / "metrics.csv"))))
    except OSError:
        return 0


def test_sweep_is_one_array_job_that_completes_and_compare_collects(tmp_path, submitted):
    sweep = tmp_path / "grid"
    start = time.time()
    job = submit(submitted, "-m", "method=byol,simsiam", "seed=0,1", *TINY, *HEADS, *SLURM,
                 "launcher.array_parallelism=2", f"out_dir={sweep}")
    tasks = task_states(sweep)  # the command returned before the tasks ended
    assert sorted(t["job_id"] for t in tasks) == [f"{job}_{i}" for i in range(4)]
    assert any(t["state"] in ("pending", "running") for t in tasks), tasks
    tasks = wait_for(lambda: ended(sweep, 4), 240, "the 4 tasks")
    assert [t["state"] for t in tasks] == ["finished"] * 4, tasks
    assert all(t["epoch"] == t["epochs"] == 2 for t in tasks)
    run_dirs = sorted(p.name for p in sweep.iterdir() if p.name != "jobs" and p.is_dir())
    assert run_dirs == sorted(t["run_dir"] for t in tasks)  # run dirs live below the sweep dir, one per task
    status = cli("status", str(sweep))
    assert status.returncode == 0 and "4 finished" in status.stdout and status.stdout.count(" 2/2 ") == 4
    compare = cli("compare", str(sweep))
    assert compare.returncode == 0, compare.stderr
    for name in run_dirs:
        assert name in compare.stdout
    print(f"4-task array: {time.time() - start:.0f} s")


def test_requeued_task_resumes_and_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, submitted):
    # 60 epochs of 42 steps: long enough that both interruptions land mid-run even when SLURM takes ~15 s to act
    # (one thread runs an epoch in ~1 s on an idle core: 16 epochs had ended before the first requeue took effect)
    epochs = 60
    args = [*TINY, *HEADS, *SLURM, "deterministic=true", f"trainer.epochs={epochs}", "trainer.batch_size=32",
            "eval.enabled=false"]
    job = submit(submitted, *args, f"out_dir={tmp_path / 'interrupted'}")
    submit(submitted, *args, f"out_dir={tmp_path / 'reference'}")  # runs alongside on the second CPU
    run_dir = run_dir_for(load_config([*args, f"out_dir={tmp_path / 'interrupted'}"]))
    ref_dir = run_dir_for(load_config([*args, f"out_dir={tmp_path / 'reference'}"]))
    log = tmp_path / "interrupted" / "jobs" / f"{job}_0_log.out"

    wait_for(lambda: rows(run_dir) >= 1, 120, "the first epoch")
    subprocess.run(["scontrol", "requeue", job], check=True)  # SIGTERM, then SLURM queues the task again
    wait_for(lambda: log.exists() and "resuming" in log.read_text(), 120, "the first resume")
    first = rows(run_dir)
    wait_for(lambda: rows(run_dir) >= first + 2, 120, "two more epochs")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # submitit's path: checkpoint(), requeue
    wait_for(lambda: ended(tmp_path / "interrupted", 1) and ended(tmp_path / "reference", 1), 600, "both runs")

    total = epochs * (1347 // 32)
    steps = [int(s) for s in re.findall(r"resuming at step (\d+)/", log.read_text())]
    assert len(steps) == 2 and 0 < steps[0] < steps[1] < total, steps  # both interruptions came mid-run
    assert task_states(tmp_path / "interrupted")[0]["state"] == "finished"
    assert [int(r["epoch"]) for r in csv.DictReader(open(run_dir / "metrics.csv"))] == list(range(1, epochs + 1))
    assert [p.name for p in (tmp_path / "interrupted").iterdir() if p.is_dir() and p.name != "jobs"] == [
        run_dir.name]  # no run dir duplicated
    got = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["method"]
    ref = torch.load(ref_dir / "checkpoints" / "last.pt", weights_only=True)["method"]
    assert got.keys() == ref.keys()
    for key in ref:
        assert torch.equal(got[key], ref[key]), key


def test_two_task_gloo_job_matches_one_process_and_the_queue_has_both_ranks_keys(tmp_path, submitted):
    """MoCo v2 with SyncBN over 2 processes x 128 images vs one process x 256 (tolerance: test_ddp.REL_TOL).
    Every entry of the 512-key queue must match the single-process queue, which holds the keys of all 256
    images of each step: keys of one rank only would leave half of it different."""
    common = ["method=mocov2", *TINY, "method.split_bn=0", "method.queue_size=512", "deterministic=true",
              "eval.enabled=false"]
    ddp_args = [*common, "trainer.batch_size=128", f"out_dir={tmp_path / 'ddp'}"]
    job = submit(submitted, *ddp_args, *SLURM, "launcher.tasks_per_node=2", "launcher.sync_bn=true")
    from ssl_zoo.launch.run import train

    one_dir = train(load_config([*common, "trainer.batch_size=256", f"out_dir={tmp_path / 'one'}"]))
    tasks = wait_for(lambda: ended(tmp_path / "ddp", 1), 240, "the DDP job")
    assert tasks[0]["state"] == "finished", tasks
    ddp_dir = run_dir_for(load_config(ddp_args))
    for rank in (0, 1):
        assert "JobEnvironment(job_id=" in (tmp_path / "ddp" / "jobs" / f"{job}_{rank}_log.out").read_text()
    assert_same_training(ddp_dir, one_dir)
    queue = torch.load(ddp_dir / "checkpoints" / "last.pt", weights_only=True)["method"]["queue"]
    assert queue.shape[0] == 512


def test_bad_sweep_submits_nothing_and_a_diverging_task_is_not_requeued(tmp_path, submitted):
    bad = cli("train", "-m", "trainer.batch_size=64,0", *[a for a in TINY if "batch_size" not in a], *HEADS,
              *SLURM, f"out_dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (tmp_path / "bad").exists()  # nothing submitted, nothing written
    refused = cli("train", *TINY, *HEADS, *SLURM, "launcher.additional={nosuchflag: 1}", f"out_dir={tmp_path / 'bad'}")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "sbatch refused the job" in refused.stderr and not (tmp_path / "bad").exists()

    sweep = tmp_path / "nan"
    job = submit(submitted, *TINY, *HEADS, *SLURM, "trainer.lr=1e30", "trainer.epochs=1", "eval.enabled=false",
                 f"out_dir={sweep}")
    tasks = wait_for(lambda: ended(sweep, 1), 180, "the diverging task")
    assert tasks[0]["state"] == "diverged", tasks
    def queue_state() -> str:
        return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()

    wait_for(lambda: queue_state() == "", 60, "the task to leave the queue")
    time.sleep(3)  # a requeue would have put it back (PENDING) by now
    assert queue_state() == ""
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=0" in info and "JobState=FAILED" in info, info
