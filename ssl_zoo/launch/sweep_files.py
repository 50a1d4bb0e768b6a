"""The bookkeeping files of a sweep folder (<sweep dir>/jobs/), written here and read back here as checked data.

- sweep-<id>.json: one manifest per submission (task -> run directory), made by ssl_zoo.launch.launcher;
- <job id>_state.json: what a SLURM array task reports about itself (running, finished, stopped, requeued,
  failed + its error), written by the task (rank 0) when it starts and when it ends.
`ssl-zoo status` reads only these (never submitit's result pickles: unpickling a file in the sweep folder would
run whatever code it holds). Anything in jobs/ may have been edited or damaged: a file that does not hold what
it should is left out and named, never a crash.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path, PurePosixPath

from ssl_zoo.common.errors import UserError
from ssl_zoo.runs.atomic import write_json

JOBS = "jobs"  # <sweep dir>/jobs: submitit's folder, the manifests and the task states
MANIFEST = "sweep-{}.json"  # one per submission, named by its id
STATES = ("running", "finished", "stopped", "requeued", "failed")
JOB_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")  # 123, or 123_4 for an array task
JOBS_MAX_BYTES = 20_000_000  # far above any manifest (a 10k-run grid is ~3 MB); a larger file is not read


def _read_json(path: Path) -> tuple[object, str | None]:
    try:
        with open(path, "rb") as f:
            raw = f.read(JOBS_MAX_BYTES + 1)
    except OSError as err:
        return None, f"unreadable ({err.strerror or type(err).__name__})"
    if len(raw) > JOBS_MAX_BYTES:
        return None, f"larger than {JOBS_MAX_BYTES // 1_000_000} MB"
    try:
        return json.loads(raw.decode()), None
    except (ValueError, RecursionError):  # not utf-8, not json, nested too deep
        return None, "not json"


def _run_dir(value: object) -> str | None:
    """A task's run directory: a relative path inside the sweep folder (None when it is anything else)."""
    if not isinstance(value, str) or not value or "\0" in value:
        return None
    path = PurePosixPath(value)
    return value if not path.is_absolute() and ".." not in path.parts else None


def _task(entry: object, launcher: str) -> dict | None:
    if not isinstance(entry, dict) or _run_dir(entry.get("run_dir")) is None:
        return None
    job_id, epochs = entry.get("job_id"), entry.get("epochs")
    if job_id is not None and not (isinstance(job_id, str) and JOB_ID.match(job_id)):
        return None
    if launcher == "local":
        job_id = None
    ok_epochs = isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 0
    return {"job_id": job_id, "run_dir": entry["run_dir"], "epochs": epochs if ok_epochs else None}


def _manifest(data: object, path: Path) -> tuple[dict | None, str | None]:
    """The fields status and launch use, checked; (None, reason) for a file that is not a manifest."""
    if not isinstance(data, dict):
        return None, f"holds a {type(data).__name__}, not a manifest object"
    launcher, tasks = data.get("launcher"), data.get("tasks")
    if launcher not in ("local", "slurm"):
        return None, "no launcher (local or slurm)"
    if not isinstance(tasks, list):
        return None, "no task list"
    good = [t for t in map(lambda e: _task(e, launcher), tasks) if t is not None]
    skipped = data.get("skipped") if isinstance(data.get("skipped"), list) else []
    pid = data.get("pid")
    manifest = {"id": str(data.get("id") or path.stem.removeprefix("sweep-"))[:100], "launcher": launcher,
                "submitted": str(data.get("submitted") or "")[:40], "host": str(data.get("host") or "")[:200],
                "pid": pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None,
                "tasks": good,
                "skipped": [{"run_dir": e["run_dir"]} for e in skipped
                            if isinstance(e, dict) and _run_dir(e.get("run_dir")) is not None]}
    bad = len(tasks) - len(good)
    return manifest, (f"{bad} of its {len(tasks)} task entries are malformed" if bad else None)


def manifest_path(sweep_dir: Path, ident: str) -> Path:
    return sweep_dir / JOBS / MANIFEST.format(ident)


def write_manifest_file(path: Path, manifest: dict) -> None:
    write_json(path, manifest)


def read_manifests(sweep_dir: Path, skipped: list[str] | None = None) -> list[dict]:
    """Every submission into this sweep folder, oldest first, checked (see _manifest). Files that are not
    manifests, and malformed task entries, are left out; `skipped` gets one line per such file."""
    out = []
    for path in sorted((sweep_dir / JOBS).glob(MANIFEST.format("*"))):
        data, problem = _read_json(path)
        manifest, problem = (None, problem) if problem else _manifest(data, path)
        if problem is not None and skipped is not None:
            skipped.append(f"{path.relative_to(sweep_dir)}: {problem}")
        if manifest is not None:
            out.append(manifest)
    return sorted(out, key=lambda m: m["submitted"])


def state_path(jobs_dir: Path, job_id: str) -> Path:
    return jobs_dir / f"{job_id}_state.json"


def write_state(state: str, error: str = "") -> None:
    """Called inside a submitit task: records this task's state next to submitit's own files (rank 0 only)."""
    import submitit

    env = submitit.JobEnvironment()
    if env.global_rank != 0 or not JOB_ID.match(str(env.job_id)):
        return
    try:
        write_json(state_path(env.paths.folder, str(env.job_id)),
                   {"job_id": str(env.job_id), "state": state, "error": error[:500], "host": socket.gethostname(),
                    "pid": os.getpid(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    except UserError:  # a full or read-only jobs/ folder: the task goes on, status shows less
        pass


def read_state(jobs_dir: Path, job_id: str) -> tuple[dict | None, str | None]:
    """(state, None) for a usable state file, (None, None) when there is none, (None, reason) when one is there
    but unusable. Only the fields status shows are kept, as short text."""
    path = state_path(jobs_dir, job_id)
    if not JOB_ID.match(job_id) or not path.is_file():
        return None, None
    data, problem = _read_json(path)
    if problem is None and (not isinstance(data, dict) or data.get("state") not in STATES):
        problem = "holds no known task state"
    if problem is not None:
        return None, f"{JOBS}/{path.name}: {problem}"
    return {k: " ".join(str(data.get(k) or "").split())[:300] for k in ("state", "error", "host", "time")}, None
