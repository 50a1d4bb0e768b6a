"""`ssl-zoo status <folder>`: each run below a folder (the runs of its sweeps, and single runs) with its state and
progress.

States: pending (queued, or requeued after a preemption), running, finished, diverged (NaN loss), failed (an
error: the note says which), stopped (no longer queued and never ended: cancelled or killed; submitting the same
sweep again resumes it), unknown (SLURM's queue cannot be read from here), unfinished (a single run, not part of a
sweep, without results.json: running now, or stopped; the same command resumes it). Progress is epoch x/y from
metrics.csv.
"""

from __future__ import annotations

import csv
import getpass
import json
import os
import socket
import subprocess
from pathlib import Path

from ssl_zoo.errors import UserError

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}


def squeue() -> dict[str, tuple[str, str]] | None:
    """{job id (123 or 123_4): (state, reason)} of this user's queued and running jobs; None without squeue."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    jobs = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            jobs[parts[0]] = (parts[1], parts[2])
    return jobs


def _progress(run_dir: Path) -> tuple[int, float | None]:
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return 0, None
    if not rows:
        return 0, None
    try:
        return int(float(rows[-1]["epoch"])), float(rows[-1]["loss"])
    except (KeyError, ValueError):
        return len(rows), None


def _error_of(folder: Path, job_id: str) -> str | None:
    """The last line of the error submitit recorded for the task (None when it recorded none)."""
    path = folder / f"{job_id}_0_result.pkl"
    if not path.exists():
        return None
    from submitit.core.utils import pickle_load

    try:
        outcome, value = pickle_load(path)
    except Exception:  # unreadable result file: report it as an error without detail
        return "unreadable result file"
    if outcome == "success":
        return "finished without results.json"
    lines = [ln.strip() for ln in str(value).splitlines() if ln.strip()]
    last = lines[-1] if lines else "error"
    return last.split(".")[-1] if last.startswith("ssl_zoo.") else last  # ssl_zoo.errors.UserError: ...


def _alive(manifest: dict) -> bool:
    if manifest.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(manifest["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return False
    return True


def task_states(sweep_dir: Path) -> list[dict]:
    """One dict per run of every submission into sweep_dir (the latest submission of a run wins)."""
    from ssl_zoo.launch import JOBS, read_manifests
    from ssl_zoo.rundir import read_results

    manifests = read_manifests(sweep_dir)
    queue = squeue() if any(m["launcher"] == "slurm" for m in manifests) else {}
    rows: dict[str, dict] = {}
    for m in manifests:
        local_alive, running_seen = m["launcher"] == "local" and _alive(m), False
        for entry in m.get("skipped", []):
            rows.setdefault(entry["run_dir"], {"sweep": m["id"], "job_id": None, "run_dir": entry["run_dir"]})
        for t in m["tasks"]:
            run_dir = sweep_dir / t["run_dir"]
            results = read_results(run_dir) or {}
            epoch, loss = _progress(run_dir)
            row = {"sweep": m["id"], "job_id": t["job_id"], "run_dir": t["run_dir"], "epoch": epoch,
                   "epochs": t["epochs"], "loss": loss, "note": ""}
            crash = results.get("error", "") if results.get("status") == "failed" else None  # a retry may be on
            if results.get("status") in ("finished", "diverged"):
                row["state"] = results["status"]
                row["note"] = results.get("error", "") if results["status"] == "diverged" else ""
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
                row["note"] = (f"requeued, resumes after epoch {epoch}" if epoch and state in QUEUED
                               else reason if state in QUEUED else "")
            else:
                error = _error_of(sweep_dir / JOBS, t["job_id"]) or crash
                row["state"] = "failed" if error else "stopped"
                row["note"] = error or "not queued and not ended (cancelled or killed); submit again to resume"
            rows[t["run_dir"]] = row
    out = []
    for run_dir, row in rows.items():
        if "state" not in row:  # skipped at submission: ended before
            results = read_results(sweep_dir / run_dir) or {}
            epoch, loss = _progress(sweep_dir / run_dir)
            row.update(state=results.get("status", "unknown"), epoch=epoch, epochs=results.get("epochs"),
                       loss=loss, note="ended before this submission")
        results = read_results(sweep_dir / run_dir) or {}
        row["knn_top1"], row["linear_top1"] = results.get("knn_top1"), results.get("linear_top1")
        out.append(row)
    return out + single_runs(sweep_dir, set(rows))


def single_runs(folder: Path, listed: set[str]) -> list[dict]:
    """Runs below the folder (or the folder itself) that no sweep manifest lists: `ssl-zoo train` runs."""
    from ssl_zoo.analysis.results import find_run_dirs
    from ssl_zoo.rundir import read_results

    out = []
    for run_dir in find_run_dirs([folder]):
        rel = str(run_dir.relative_to(folder)) if run_dir != folder else "."
        if rel in listed:
            continue
        results = read_results(run_dir) or {}
        epoch, loss = _progress(run_dir)
        state = results.get("status") or "unfinished"
        note = results.get("error", "") if state in ("failed", "diverged") else (
            "no results.json: running, or stopped (the same command resumes it)" if state == "unfinished" else "")
        out.append({"sweep": None, "job_id": None, "run_dir": rel, "epoch": epoch, "epochs": _epochs(run_dir),
                    "loss": loss, "note": note, "state": state, "knn_top1": results.get("knn_top1"),
                    "linear_top1": results.get("linear_top1")})
    return out


def _epochs(run_dir: Path) -> int | None:
    from omegaconf import OmegaConf

    try:
        return int(OmegaConf.select(OmegaConf.load(run_dir / "config.yaml"), "trainer.epochs"))
    except Exception:  # an unreadable config: progress shows x/?
        return None


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def run(args) -> int:
    from tabulate import tabulate

    from ssl_zoo.commands.folders import one_folder
    from ssl_zoo.config import absolute

    path = one_folder([args.sweep_dir], "status", "sweep or run directory")[0]
    sweep_dir = absolute(path)
    if not sweep_dir.is_dir():
        raise UserError(f"{path} is not a directory")
    tasks = task_states(sweep_dir)
    if not tasks:
        raise UserError(f"{sweep_dir} holds no runs (no sweep manifest in jobs/, no run directory below it)")
    if args.json:
        print(json.dumps(tasks, indent=1))
        return 0
    table = [[t["job_id"] or "-", t["state"], f"{t['epoch']}/{t['epochs'] or '?'}", _fmt(t["loss"], ".4f"),
              _fmt(t["knn_top1"], ".2f"), _fmt(t["linear_top1"], ".2f"), t["run_dir"], t["note"]] for t in tasks]
    print(tabulate(table, headers=["job", "state", "epoch", "loss", "kNN", "linear", "run", "note"],
                   tablefmt="simple", disable_numparse=True))
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    print(f"\n{len(tasks)} run(s) in {sweep_dir}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("status", help="state and progress (epoch x/y) of every run below a folder")
    p.add_argument("sweep_dir", help="a sweep's out_dir (printed by `ssl-zoo train -m ...`), a folder of runs or "
                   "one run directory (sweep_dir=<path> works too)")
    p.add_argument("--json", action="store_true", help="print the tasks as JSON")
    p.set_defaults(func=run)
