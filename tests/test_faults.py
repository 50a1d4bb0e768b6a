"""Fault injection: SIGKILL at random moments (many inside checkpoint and metrics writes), SIGTERM / SIGUSR2
stops, and a diverging run. Every interrupted run, started again with the same command, ends with weights
identical to an uninterrupted run, and its metrics.csv matches that run's.

The runs are `ssl-zoo train` processes (ssl_zoo.cli.main in processes forked from one that imported it, with
os.fsync slowed down and announced so that a kill can be aimed into the middle of a write), tiny and
deterministic, on one CPU thread.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl_zoo.cli import main
from ssl_zoo.config.load import load_config
from ssl_zoo.runs.checkpoint import find_checkpoint, read_checkpoint
from ssl_zoo.runs.identity import run_dir_for

from tiny import tiny_overrides

# The runs are forked from one "zygote" process that has imported ssl_zoo once (a fresh `ssl-zoo` process
# spends seconds importing torch): each fork is a new process that runs ssl_zoo.cli.main, writes its stdout and
# stderr to files and gets killed or exits like `ssl-zoo train`. os.fsync is made slow and announced
# ("FSYNC <path>") so that a kill can land between a file's write and its rename, or between a rename and the
# folder's fsync; with `snapshot` a run also keeps a copy of every checkpoint it writes, by step (the reference).
ZYGOTE = r"""
import json, os, shutil, sys, time
import torch
from ssl_zoo.cli import main
import ssl_zoo.launch.run, ssl_zoo.train.trainer  # the heavy imports, done once
real_fsync, real_replace, opts = os.fsync, os.replace, {}
def fsync(fd):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = "?"
    print("FSYNC", target, flush=True)
    time.sleep(opts["delay"])
    real_fsync(fd)
def replace(src, dst):
    real_replace(src, dst)
    if opts.get("snapshot") and str(dst).endswith(os.path.join("checkpoints", "last.pt")):
        step = torch.load(dst, weights_only=True)["step"]
        shutil.copy(dst, os.path.join(opts["snapshot"], f"step-{step}.pt"))
os.fsync, os.replace = fsync, replace
for line in sys.stdin:
    req = json.loads(line)
    if "wait" in req:
        print(json.dumps({"code": os.waitstatus_to_exitcode(os.waitpid(req["wait"], 0)[1])}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        opts.update(req)
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        try:
            code = main(req["args"])
        except SystemExit as err:
            code = err.code
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


EPOCHS, STEPS_PER_EPOCH = 3, 1347 // 64  # digits' 1347 train images, batch 64
ARGS = ["deterministic=true", "device=cpu", f"trainer.epochs={EPOCHS}", "eval.enabled=false",
        "monitor.num_images=64", "trainer.log_every=5"]
SKIP_COLUMNS = {"images_per_s"}  # wall-clock: the one column that may differ


class Zygote:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], env={**os.environ, "OMP_NUM_THREADS": "1"},
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class Child:
    """One `ssl-zoo train` run forked from the zygote; its stdout lines are read from a file."""

    count = 0

    def __init__(self, zygote: Zygote, args: list[str], folder: Path, delay: float, snapshot: Path | None = None):
        Child.count += 1
        self.zygote, self.out, self.err = zygote, folder / f"out{Child.count}", folder / f"err{Child.count}"
        self.pid = zygote.ask({"args": ["train", *args], "stdout": str(self.out), "stderr": str(self.err),
                               "delay": delay, "snapshot": str(snapshot) if snapshot else None})["pid"]
        self.seen, self.code = 0, None

    def alive(self) -> bool:
        try:  # the zygote's child, not ours: ask /proc (a zombie has ended, it only waits for its exit status)
            return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 240) -> bool:
        """Blocks until the count-th new stdout line matching pattern; False if the run ended first."""
        deadline = time.time() + timeout
        while count > 0 and time.time() < deadline:
            lines = self.out.read_text().splitlines() if self.out.exists() else []
            for line in lines[self.seen:]:
                self.seen += 1
                count -= bool(re.search(pattern, line))
                if count == 0:
                    return True
            if not self.alive():
                return False
            time.sleep(0.01)
        return count <= 0

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def finish(self) -> tuple[int, str]:
        self.code = self.zygote.ask({"wait": self.pid})["code"]
        return self.code, self.err.read_text()


def _method_state(run_dir: Path) -> dict:
    return read_checkpoint(run_dir / "checkpoints" / "last.pt")["method"]


def _assert_same_weights(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        assert torch.equal(a[key], b[key]), f"{where}: {key} differs"


def _metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in SKIP_COLUMNS} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkill_anywhere_and_stop_signals_resume_to_identical_weights(tmp_path):
    zygote = Zygote()
    try:
        _faults(zygote, tmp_path)
    finally:
        zygote.close()


def _faults(zygote: Zygote, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(int(os.environ.get("SSL_ZOO_FAULT_SEED", "8")))
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    ref_args = tiny_overrides(tmp_path / "ref", *ARGS)
    ref = Child(zygote, ref_args, logs, delay=0.0, snapshot=snapshots)
    code, err = ref.finish()
    assert code == 0, err
    ref_dir = run_dir_for(load_config(ref_args))
    ref_weights, ref_metrics = _method_state(ref_dir), _metrics(ref_dir)
    ref_steps = {int(p.stem.split("-")[1]) for p in snapshots.glob("step-*.pt")}
    assert ref_steps == {0, *(STEPS_PER_EPOCH * e for e in range(1, EPOCHS + 1))}

    # 12 SIGKILLs (half aimed into a write, half at random times) and one SIGTERM and one SIGUSR2, shuffled.
    plan = ["kill_in_write"] * 6 + ["kill_any_time"] * 6 + ["SIGTERM", "SIGUSR2"]
    rng.shuffle(plan)
    total = EPOCHS * STEPS_PER_EPOCH
    chain, log, i = 0, [], 0
    args = tiny_overrides(tmp_path / "chain0", *ARGS)
    while i < len(plan):
        how = plan[i]
        while True:
            run_dir = run_dir_for(load_config(args))
            found = find_checkpoint(run_dir) if run_dir.exists() else None
            step = 0 if found is None else found[0]["step"]
            # A stop must reach the training loop: not in a run whose next checkpoint is its last one.
            if how.startswith("kill") or step < (EPOCHS - 1) * STEPS_PER_EPOCH:
                break
            chain += 1
            args = tiny_overrides(tmp_path / f"chain{chain}", *ARGS)
        child = Child(zygote, args, logs, delay=0.15)
        if not child.wait_for("^FSYNC"):  # the run directory is being written: the kill is not trivial
            code, err = child.finish()
            pytest.fail(f"a restart ended before writing anything (exit {code}): {err}")
        if how == "kill_in_write":
            reached = child.wait_for("^FSYNC", count=rng.randint(0, 6))
            time.sleep(rng.uniform(0.0, 0.15))  # inside that fsync's delay: before its rename or folder sync
        elif how == "kill_any_time":
            time.sleep(rng.uniform(0.0, 2.5))
            reached = True
        else:  # in the training loop: after a checkpoint write started there, before the last epoch ends
            reached = child.wait_for("^FSYNC .*checkpoints")
            time.sleep(rng.uniform(0.3, 1.0))
        sig = {"SIGTERM": signal.SIGTERM, "SIGUSR2": signal.SIGUSR2}.get(how, signal.SIGKILL)
        child.signal(sig)
        code, err = child.finish()
        found = find_checkpoint(run_dir)  # never raises: whatever the kill hit, a whole checkpoint is there
        step = None if found is None else found[0]["step"]
        log.append((how, reached, code, step))
        # the run got to its end before the signal (exit 0, or killed after results.json, its last file, was
        # written, while it printed its summary): check it, retry on a fresh chain
        if code == 0 or (run_dir / "results.json").exists():
            assert step == total, log
            _assert_same_weights(ref_weights, _method_state(run_dir), f"chain {chain}")
            assert _metrics(run_dir) == ref_metrics
            chain += 1
            args = tiny_overrides(tmp_path / f"chain{chain}", *ARGS)
            continue
        i += 1
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL, (how, code, err)
        elif code == -sig:  # only after training: the signal handlers are gone once the loop has ended
            assert step == total, (how, code, err)
        else:  # finish the step, checkpoint there, exit 3 with one line
            assert code == 3, (how, code, err)
            stopped = int(re.search(r"stopped at step (\d+)", err).group(1))
            assert step == stopped and len(err.strip().splitlines()) == 1, err
        if step in ref_steps:  # an epoch-end (or step-0) checkpoint: the weights the reference saved there
            ref_state = torch.load(snapshots / f"step-{step}.pt", weights_only=True)
            _assert_same_weights(ref_state["method"], found[0]["method"], f"after {how} at step {step}")

    child = Child(zygote, args, logs, delay=0.0)
    code, err = child.finish()
    assert code == 0, err
    run_dir = run_dir_for(load_config(args))
    _assert_same_weights(ref_weights, _method_state(run_dir), "the last chain")
    assert _metrics(run_dir) == ref_metrics, "metrics.csv must match the uninterrupted run's"
    assert json.loads((run_dir / "results.json").read_text())["status"] == "finished"
    kills = [entry for entry in log if entry[0].startswith("kill") and entry[2] == -signal.SIGKILL]
    assert len(kills) >= 10, log
    assert sum(1 for how, reached, _, _ in kills if how == "kill_in_write" and reached) >= 4, log
    print("fault log (how, aimed write reached, exit, checkpoint step):", log)


@pytest.mark.slow
def test_a_diverging_run_stops_cleanly_with_a_loadable_checkpoint(tmp_path, capfd):
    args = tiny_overrides(tmp_path, "trainer.lr=1e6", "trainer.epochs=2", "eval.enabled=false", "device=cpu")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", *args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 4, out.stderr
    assert re.search(r"diverged: loss is nan at step \d+, epoch 1", out.stderr), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    run_dir = run_dir_for(load_config(args))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged" and results["collapsed"] is False and "step" in results["error"]
    state = read_checkpoint(run_dir / "checkpoints" / "last.pt")  # whole, weights_only, finite
    assert state["step"] == 0  # it diverged in epoch 1: the step-0 checkpoint is the last good one
    assert all(torch.isfinite(t).all() for t in state["method"].values() if t.is_floating_point())
    capfd.readouterr()
    assert main(["train", *args]) == 2  # the same command again: refused, it would diverge again
    err = capfd.readouterr().err
    assert "diverged" in err and "lower trainer.lr" in err and len(err.strip().splitlines()) == 1
