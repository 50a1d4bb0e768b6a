"""`ssl-zoo status <folder>`: each run below a folder (the runs of its sweeps, and single runs) with its state and
progress.

States: pending (queued, or requeued after a preemption), running, finished, diverged (NaN loss), failed (an
error: the note says which), stopped (no longer queued and never ended: cancelled or killed; submitting the same
sweep again resumes it), unknown (SLURM's queue cannot be read from here), unfinished (a single run, not part of a
sweep, without results.json and not running; the same command resumes it). Progress is epoch x/y from
metrics.csv. A run that a process holds (its run.lock, ssl_zoo.runs.runlock) is running, and the note names the process.

Everything is read as data and checked, each file by its one reader: the manifests and task states in jobs/ by
ssl_zoo.launch.sweep_files; results.json, metrics.csv and config.yaml by ssl_zoo.runs. Nothing is unpickled. A
file that does not hold what it should is skipped and named (a note on its run, or a `skipped` line), never a
crash.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from ssl_zoo.common.errors import UserError
from ssl_zoo.launch import slurm_queue
from ssl_zoo.runs.metrics_file import last_epoch_and_loss
from ssl_zoo.runs.results_file import results_summary

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}


class RunView:
    """What status shows of one run directory, read by ssl_zoo.runs; `problems` names what was left out."""

    def __init__(self, run_dir: Path):
        self.results, self.problems = results_summary(run_dir)
        self.epoch, self.loss, unread = last_epoch_and_loss(run_dir)
        self.problems += unread

    def note(self, text: str) -> str:
        return "; ".join([t for t in (text, *self.problems) if t])


def _holder(run_dir: Path) -> str | None:
    from ssl_zoo.runs.runlock import holder

    info = holder(run_dir)
    if info is None:
        return None
    return f"pid {info['pid']} on {info.get('host', '?')}" if info.get("pid") else "held by a process"


def _task_note(sweep_dir: Path, job_id: str, crash: str | None, skipped: list[str]) -> tuple[str, str]:
    """(state, note) of a SLURM task that is no longer queued and left no final results.json, from the state
    file it wrote (ssl_zoo.launch.sweep_files)."""
    from ssl_zoo.launch.sweep_files import JOBS, read_state

    state, problem = read_state(sweep_dir / JOBS, job_id)
    if problem:
        skipped.append(problem)
    if state is not None and state["state"] == "failed":
        return "failed", state["error"] or "error (no message)"
    if crash is not None:
        return "failed", crash
    if state is None:
        return "stopped", "not queued and never started or reported (cancelled?); submit again to resume"
    if state["state"] in ("stopped", "requeued"):
        return "stopped", f"stopped by a signal ({state['error'] or 'checkpoint saved'}); submit again to resume"
    if state["state"] == "running":
        return "stopped", (f"killed while running on {state['host'] or '?'} (out of memory, node failure, "
                           "scancel or time limit); submit again to resume")
    return "stopped", "ended without results.json; submit again to resume"


def _alive(manifest: dict) -> bool:
    if manifest.get("host") != socket.gethostname() or manifest.get("pid") is None:
        return False
    try:
        os.kill(int(manifest["pid"]), 0)
    except (OSError, ValueError, OverflowError):
        return False
    return True


def task_states(sweep_dir: Path, skipped: list[str] | None = None) -> list[dict]:
    """One dict per run of every submission into sweep_dir (the latest submission of a run wins), then the
    single runs below it. `skipped` gets a line for every file that was left out."""
    from ssl_zoo.launch.sweep_files import read_manifests

    skipped = [] if skipped is None else skipped
    manifests = read_manifests(sweep_dir, skipped)
    queue = slurm_queue.squeue() if any(m["launcher"] == "slurm" for m in manifests) else {}
    rows: dict[str, dict] = {}
    for m in manifests:
        local_alive, running_seen = m["launcher"] == "local" and _alive(m), False
        for entry in m["skipped"]:
            rows.setdefault(entry["run_dir"], {"sweep": m["id"], "job_id": None, "run_dir": entry["run_dir"]})
        for t in m["tasks"]:
            run_dir = sweep_dir / t["run_dir"]
            files = RunView(run_dir)
            results = files.results
            row = {"sweep": m["id"], "job_id": t["job_id"], "run_dir": t["run_dir"], "epoch": files.epoch,
                   "epochs": t["epochs"], "loss": files.loss, "note": ""}
            crash = (results["error"] or "error") if results.get("status") == "failed" else None  # retry may be on
            holder = _holder(run_dir)
            if results.get("status") in ("finished", "diverged"):
                row["state"] = results["status"]
                row["note"] = results["error"] if results["status"] == "diverged" else ""
            elif holder is not None and m["launcher"] == "local":
                row["state"], row["note"] = "running", holder
            elif m["launcher"] == "local":
                row["state"] = "pending" if running_seen else ("running" if local_alive else "stopped")
                running_seen = running_seen or local_alive
                if row["state"] == "stopped" and crash is not None:
                    row["state"], row["note"] = "failed", crash
            elif queue is None:
                row["state"] = "unknown"
            elif t["job_id"] in queue:
                state, reason = queue[t["job_id"]]
                row["state"] = "pending" if state in QUEUED else "running"
                row["note"] = (f"requeued, resumes after epoch {files.epoch}" if files.epoch and state in QUEUED
                               else reason if state in QUEUED else "")
            elif t["job_id"] is None:  # submission interrupted before sbatch answered
                row["state"], row["note"] = "stopped", "never submitted (no job id)"
            else:
                row["state"], row["note"] = _task_note(sweep_dir, t["job_id"], crash, skipped)
            row["note"] = files.note(row["note"])
            rows[t["run_dir"]] = row
    out = []
    for run_dir, row in rows.items():
        files = RunView(sweep_dir / run_dir)
        if "state" not in row:  # skipped at submission: ended before
            row.update(state=files.results.get("status") or "unknown", epoch=files.epoch,
                       epochs=files.results.get("epochs"), loss=files.loss,
                       note=files.note("ended before this submission"))
        row["knn_top1"], row["linear_top1"] = files.results.get("knn_top1"), files.results.get("linear_top1")
        out.append(row)
    return out + single_runs(sweep_dir, set(rows), skipped)


def single_runs(folder: Path, listed: set[str], skipped: list[str] | None = None) -> list[dict]:
    """Runs below the folder (or the folder itself) that no sweep manifest lists: `ssl-zoo train` runs."""
    from ssl_zoo.runs.discovery import find_run_dirs

    out = []
    for run_dir in find_run_dirs([folder]):
        rel = str(run_dir.relative_to(folder)) if run_dir != folder else "."
        if rel in listed:
            continue
        files = RunView(run_dir)
        results = files.results
        holder = _holder(run_dir)
        state = results.get("status") or ("running" if holder else "unfinished")
        note = results.get("error", "") if state in ("failed", "diverged") else holder if state == "running" else (
            "no results.json and not running (the same command resumes it)" if state == "unfinished" else "")
        out.append({"sweep": None, "job_id": None, "run_dir": rel, "epoch": files.epoch, "epochs": _epochs(run_dir),
                    "loss": files.loss, "note": files.note(note), "state": state,
                    "knn_top1": results.get("knn_top1"), "linear_top1": results.get("linear_top1")})
    return out


def _epochs(run_dir: Path) -> int | None:
    from omegaconf import OmegaConf

    from ssl_zoo.runs.config_file import unchecked_config

    try:
        return int(OmegaConf.select(unchecked_config(run_dir), "trainer.epochs"))
    except Exception:  # an unreadable config: progress shows x/?
        return None


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def run(args) -> int:
    from tabulate import tabulate

    from ssl_zoo.commands.folders import one_folder
    from ssl_zoo.common.paths import absolute

    path = one_folder([args.sweep_dir], "status", "sweep or run directory")[0]
    sweep_dir = absolute(path)
    if not sweep_dir.is_dir():
        raise UserError(f"{path} is not a directory" if sweep_dir.exists() else f"{path} does not exist")
    skipped: list[str] = []
    tasks = task_states(sweep_dir, skipped)
    if not tasks:
        also = f" ({len(skipped)} file(s) skipped: {skipped[0]})" if skipped else ""
        raise UserError(f"{sweep_dir} holds no runs (no sweep manifest in jobs/, no run directory below it){also}")
    if args.json:
        print(json.dumps(tasks, indent=1))
    else:
        table = [[t["job_id"] or "-", t["state"], f"{t['epoch']}/{t['epochs'] if t['epochs'] is not None else '?'}",
                  _fmt(t["loss"], ".4f"), _fmt(t["knn_top1"], ".2f"), _fmt(t["linear_top1"], ".2f"), t["run_dir"],
                  t["note"]] for t in tasks]
        print(tabulate(table, headers=["job", "state", "epoch", "loss", "kNN", "linear", "run", "note"],
                       tablefmt="simple", disable_numparse=True))
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t["state"]] = counts.get(t["state"], 0) + 1
        print(f"\n{len(tasks)} run(s) in {sweep_dir}: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
              flush=True)
    for line in skipped:  # on stderr: --json output stays parseable
        print(f"ssl-zoo: skipped {line}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("status", help="state and progress (epoch x/y) of every run below a folder")
    p.add_argument("sweep_dir", help="a sweep's out_dir (printed by `ssl-zoo train -m ...`), a folder of runs or "
                   "one run directory (sweep_dir=<path> works too)")
    p.add_argument("--json", action="store_true", help="print the tasks as JSON")
    p.set_defaults(func=run)
