"""results.json: its one writer and its readers (see ssl_zoo.runs.reading for what they return).

linear_top1/linear_top5 are the L-BFGS probe's numbers; eval.protocol=sgd writes its own under
linear_sgd_top1/linear_sgd_top5 (details under linear_sgd). Files written before that split held the SGD numbers
in linear_top1/top5 (with linear_protocol "sgd" and the L-BFGS probe's under linear_lbfgs): the readers move them
to their keys, so every verb reads one meaning per key whatever version wrote the file.
"""

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
    return (None, f"{path}: {problem}") if problem else (with_lbfgs_headline(res), None)


def with_lbfgs_headline(res: dict) -> dict:
    """An older results.json (linear_protocol "sgd": the SGD numbers in linear_top1/top5) with its numbers under
    the keys of today's: the L-BFGS probe's in linear_top1/top5, the SGD protocol's in linear_sgd_top1/top5.
    The run and its random-init baseline alike; anything else is returned as it is."""
    for part in (res, res.get("random_init")):
        if not isinstance(part, dict) or part.get("linear_protocol") != "sgd":
            continue
        lbfgs = part.pop("linear_lbfgs", None)
        lbfgs = lbfgs if isinstance(lbfgs, dict) else {}
        part.update(linear_sgd_top1=part.get("linear_top1"), linear_sgd_top5=part.get("linear_top5"),
                    linear_top1=lbfgs.get("top1"), linear_top5=lbfgs.get("top5"), linear_protocol="lbfgs")
    return res


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
    data = with_lbfgs_headline(data)
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
