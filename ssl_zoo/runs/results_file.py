"""results.json: its one writer and its readers (see ssl_zoo.runs.reading for what they return)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ssl_zoo.runs.atomic import write_json
from ssl_zoo.runs.file_checks import results_problem
from ssl_zoo.runs.layout import RESULTS, STATUSES
from ssl_zoo.runs.reading import read_text, text_or_problem


def write_results(run_dir: Path, results: dict) -> None:
    write_json(run_dir / RESULTS, results)


def results_or_problem(run_dir: Path) -> tuple[dict | None, str | None]:
    """results.json as a dict whose keys hold what ssl-zoo writes there (file_checks.results_problem)."""
    path = Path(run_dir) / RESULTS
    text, problem = text_or_problem(path)
    if text is None:
        return None, problem
    try:
        res = json.loads(text)
    except (ValueError, RecursionError) as err:  # RecursionError: nested deeper than any results.json
        return None, f"{path}: not JSON ({str(err).split(':')[0]})"
    problem = results_problem(res)
    return (None, f"{path}: {problem}") if problem else (res, None)


def _number(v: object) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _text(v: object) -> str:
    return " ".join(str(v).split())[:300] if v is not None else ""


def results_summary(run_dir: Path) -> tuple[dict, list[str]]:
    """(status, error, epochs, knn_top1, linear_top1; one note per field left out): what `ssl-zoo status`
    shows, each field checked on its own, so one wrong field hides only itself. {} when there is no file."""
    path = run_dir / RESULTS
    if not path.exists():
        return {}, []
    try:
        data = json.loads(read_text(path))
    except (OSError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return {}, [f"{RESULTS} unreadable (not a json object)"]
    problems = []
    out = {"status": data.get("status") if data.get("status") in STATUSES else None,
           "error": _text(data.get("error")), "epochs": data.get("epochs")}
    if data.get("status") is not None and out["status"] is None:
        problems.append(f"{RESULTS} status {_text(data.get('status'))[:40]!r} unknown")
    for key in ("knn_top1", "linear_top1"):
        out[key] = _number(data.get(key))
        if data.get(key) is not None and out[key] is None:
            problems.append(f"{RESULTS} {key} is not a number")
    if not (isinstance(out["epochs"], int) and not isinstance(out["epochs"], bool)):
        out["epochs"] = None
    return out, problems
