"""`ssl-zoo status <folder>`: each run below a folder (the runs of its sweeps, and single runs) with its state and
progress.

States: pending (queued, or requeued after a preemption), running, finished, diverged (NaN loss), failed (an
error: the note says which), stopped (no longer queued and never ended: cancelled or killed; submitting the same
sweep again resumes it), unknown (SLURM's queue cannot be read from here), unfinished (a single run, not part of a
sweep, without results.json and not running; the same command resumes it). Progress is epoch x/y from
metrics.csv. A run that a process holds (its run.lock, ssl_zoo.runs.runlock) is running, and the note names the process.

Everything is read as data and checked: the manifests and task states in jobs/ (ssl_zoo.launch.sweep_files),
results.json, metrics.csv, config.yaml. Nothing is unpickled. A file that does not hold what it should is
skipped and named (a note on its run, or a `skipped` line), never a crash.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import sys
from pathlib import Path

from ssl_zoo.common.errors import UserError
from ssl_zoo.launch import slurm_queue

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
RESULT_STATES = ("finished", "diverged", "failed", "unfinished")  # what results.json's status may say
MAX_BYTES = 50_000_000  # larger run files are not read (no run writes one this large)


def _number(v: object) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _text(v: object) -> str:
    return " ".join(str(v).split())[:300] if v is not None else ""


class RunFiles:
    """What status shows of one run directory, each file read defensively; `problems` names what was skipped."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.problems = run_dir, []
        self.results = self._results()
        self.epoch, self.loss = self._progress()

    def _results(self) -> dict:
        path = self.run_dir / "results.json"
        if not path.exists():
            return {}
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read(MAX_BYTES).decode())
        except (OSError, ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            self.problems.append("results.json unreadable (not a json object)")
            return {}
        out = {"status": data.get("status") if data.get("status") in RESULT_STATES else None,
               "error": _text(data.get("error")), "epochs": data.get("epochs")}
        if data.get("status") is not None and out["status"] is None:
            self.problems.append(f"results.json status {_text(data.get('status'))[:40]!r} unknown")
        for key in ("knn_top1", "linear_top1"):
            out[key] = _number(data.get(key))
            if data.get(key) is not None and out[key] is None:
                self.problems.append(f"results.json {key} is not a number")
        if not (isinstance(out["epochs"], int) and not isinstance(out["epochs"], bool)):
            out["epochs"] = None
        return out

    def _progress(self) -> tuple[int, float | None]:
        """(last epoch, its loss) from metrics.csv; (0, None) when there is none yet."""
        path = self.run_dir / "metrics.csv"
        try:
            with open(path, "rb") as f:
                text = f.read(MAX_BYTES).decode()
            if "\0" in text:
                raise ValueError("NUL bytes")
            rows = list(csv.DictReader(io.StringIO(text)))
        except FileNotFoundError:
            return 0, None
        except (OSError, ValueError, csv.Error):  # binary (not utf-8, NUL bytes), unreadable
            self.problems.append("metrics.csv unreadable")
            return 0, None
        if not rows:
            return 0, None
        epoch, loss = _number(_float(rows[-1].get("epoch"))), _number(_float(rows[-1].get("loss")))
        if epoch is None:
            self.problems.append("metrics.csv has no readable epoch")
        return (int(epoch) if epoch is not None and epoch >= 0 else len(rows)), loss

    def note(self, text: str) -> str:
        return "; ".join([t for t in (text, *self.problems) if t])


def _float(v: object) -> float | None:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


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
            files = RunFiles(run_dir)
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
        files = RunFiles(sweep_dir / run_dir)
        if "state" not in row:  # skipped at submission: ended before
            row.update(state=files.results.get("status") or "unknown", epoch=files.epoch,
                       epochs=files.results.get("epochs"), loss=files.loss,
                       note=files.note("ended before this submission"))
        row["knn_top1"], row["linear_top1"] = files.results.get("knn_top1"), files.results.get("linear_top1")
        out.append(row)
    return out + single_runs(sweep_dir, set(rows), skipped)


def single_runs(folder: Path, listed: set[str], skipped: list[str] | None = None) -> list[dict]:
    """Runs below the folder (or the folder itself) that no sweep manifest lists: `ssl-zoo train` runs."""
    from ssl_zoo.analysis.results import find_run_dirs

    out = []
    for run_dir in find_run_dirs([folder]):
        rel = str(run_dir.relative_to(folder)) if run_dir != folder else "."
        if rel in listed:
            continue
        files = RunFiles(run_dir)
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

    try:
        return int(OmegaConf.select(OmegaConf.load(run_dir / "config.yaml"), "trainer.epochs"))
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
