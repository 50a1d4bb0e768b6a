"""Reading a run directory's files (results.json, config.yaml, metrics.csv, spectra) as checked data.

Run directories are edited by hand, copied half-way, written by older versions or damaged, and the read-only
verbs (eval, export, compare, report) must never crash on them. Every reader here returns `(value, None)` for a
usable file, `(None, None)` for an absent one and `(None, reason)` for one that is there but unusable, the reason
naming the file and what is wrong with it in a few words, so a verb can skip the run and say why in one line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

RESULTS, CONFIG, METRICS = "results.json", "config.yaml", "metrics.csv"
STATUSES = ("finished", "diverged", "failed", "unfinished")
MAX_BYTES = 50_000_000  # no run file is this large; a bigger one is not read into memory

# results.json: what each key the verbs read must hold, as (kind, may be null, must be there). Top-level keys may
# be absent (older runs, eval.enabled=false); the objects under them hold what the verbs print from them.
_KINDS: dict[str, tuple[Any, str]] = {
    "text": (lambda v: isinstance(v, str), "text"),
    "count": (lambda v: _is_number(v) and float(v).is_integer() and v >= 0, "a count"),
    "number": (lambda v: _is_number(v) and math.isfinite(v) and v >= 0, "a number >= 0"),
    "percent": (lambda v: _is_number(v) and 0 <= v <= 100, "a percentage"),  # NaN fails the range test too
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "status": (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
}
_TOP = {**{k: ("text", True, False) for k in ("method", "ablation", "data", "encoder", "error", "collapse_reason")},
        **{k: ("count", True, False) for k in ("epochs", "seed", "epochs_done", "evaluated_step", "total_steps",
                                                 "monitor_images", "processes", "knn_k", "dim")},
        **{k: ("number", True, False) for k in ("wall_s", "images_per_s", "eval_s", "knn_t")},
        **{k: ("percent", True, False) for k in ("linear_top1", "linear_top5")},  # null: a diverged SGD probe
        "knn_top1": ("percent", False, False), "online_probe_acc": ("percent", False, False),
        "status": ("status", True, False), "collapsed": ("bool", True, False)}
_PROBES = {"knn_top1": ("percent", False, True), "linear_top1": ("percent", True, True),
           "linear_top5": ("percent", True, False)}
_OBJECTS = {"projector": _PROBES, "random_init": _PROBES, "raw_pixels": _PROBES,
            "linear_lbfgs": {"top1": ("percent", False, True)},
            "linear_sgd": {"top1": ("percent", True, True), "epochs": ("count", False, True),
                           "n_train": ("count", False, True), "lr": ("number", False, True),
                           "batch_size": ("count", False, True)}}
_FINETUNE = {"n_labels": ("count", False, True), "top1": ("percent", True, True), "top5": ("percent", True, False)}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _shown(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, float) else repr(v)
    return text if len(text) <= 30 else text[:27] + "..."


def _fields_problem(obj: dict, spec: dict[str, tuple[str, bool, bool]], where: str = "") -> str | None:
    for key, (kind, nullable, required) in spec.items():
        if key not in obj:
            if required:
                return f"{where}{key} is missing"
            continue
        value = obj[key]
        ok, words = _KINDS[kind]
        if not ((value is None and nullable) or (value is not None and ok(value))):
            return f"{where}{key} is {_shown(value)}, not {words}"
    return None


def results_problem(res: Any) -> str | None:
    """Why a parsed results.json cannot be used (None when it can)."""
    if not isinstance(res, dict):
        return f"holds a {type(res).__name__}, not an object"
    if problem := _fields_problem(res, _TOP):
        return problem
    for name, spec in _OBJECTS.items():
        sub = res.get(name)
        if sub is not None and not isinstance(sub, dict):
            return f"{name} is {_shown(sub)}, not an object"
        if sub is not None and (problem := _fields_problem(sub, spec, f"{name}.")):
            return problem
    return _finetune_problem(res.get("finetune")) or _sweep_problem(res.get("knn_sweep"))


def _finetune_problem(finetune: Any) -> str | None:
    if finetune is None:
        return None
    if not isinstance(finetune, dict) or not all(isinstance(v, dict) for v in finetune.values()):
        return f"finetune is {_shown(finetune)}, not an object of objects"
    for fraction, entry in finetune.items():
        if problem := _fields_problem(entry, _FINETUNE, f"finetune.{fraction}."):
            return problem
        if entry["top1"] is not None and entry.get("top5") is None:
            return f"finetune.{fraction}.top5 is missing next to its top1"
    return None


def _sweep_problem(sweep: Any) -> str | None:
    if sweep is None:
        return None
    if not isinstance(sweep, dict):
        return f"knn_sweep is {_shown(sweep)}, not an object"
    for key, v in sweep.items():
        parts = dict(p.partition("=")[::2] for p in str(key).split(","))
        if set(parts) != {"k", "T"}:
            return f"knn_sweep key {_shown(key)} is not k=<k>,T=<T>"
        try:
            int(parts["k"]), float(parts["T"])
        except ValueError:
            return f"knn_sweep key {_shown(key)} is not k=<k>,T=<T>"
        if not _KINDS["percent"][0](v):
            return f"knn_sweep[{key}] is {_shown(v)}, not a percentage"
    return None


def _read_text(path: Path) -> tuple[str | None, str | None]:
    """(text, None), (None, None) when absent, (None, reason) when unreadable."""
    try:
        if not path.exists():
            return None, None
        if not path.is_file():
            return None, f"{path}: not a file"
        if path.stat().st_size > MAX_BYTES:
            return None, f"{path}: {path.stat().st_size} bytes, far larger than a run file"
        return path.read_text(encoding="utf-8"), None
    except UnicodeDecodeError:
        return None, f"{path}: binary, not text"
    except OSError as err:
        return None, f"{path}: cannot be read ({err.strerror or err})"


def read_results(run_dir: Path) -> tuple[dict | None, str | None]:
    """results.json as a dict whose keys hold what ssl-zoo writes there."""
    path = Path(run_dir) / RESULTS
    text, problem = _read_text(path)
    if text is None:
        return None, problem
    try:
        res = json.loads(text)
    except ValueError as err:
        return None, f"{path}: not JSON ({str(err).split(':')[0]})"
    problem = results_problem(res)
    return (None, f"{path}: {problem}") if problem else (res, None)


# config.yaml: what a run's config must hold for any verb to place the run.
_CONFIG_TEXT = ("method.name", "data.name", "encoder.name")
_CONFIG_COUNTS = ("trainer.epochs", "seed")


def config_problem(cfg: Any) -> str | None:
    """Why a loaded config.yaml is not an ssl-zoo run config (None when it is)."""
    if not isinstance(cfg, DictConfig):
        return "holds a list, not a config"
    try:
        for key in _CONFIG_TEXT:
            v = OmegaConf.select(cfg, key)
            if not isinstance(v, str) or not v:
                return f"{key} is {_shown(v) if v is not None else 'missing'}, not a name"
        for key in _CONFIG_COUNTS:
            v = OmegaConf.select(cfg, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                return f"{key} is {_shown(v) if v is not None else 'missing'}, not a count"
        ablation = OmegaConf.select(cfg, "ablation.name", default="none")
        if not isinstance(ablation, str):
            return f"ablation.name is {_shown(ablation)}, not a name"
    except Exception as err:  # an interpolation or node type OmegaConf cannot select through
        return f"{type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''}"
    return None


def read_config(run_dir: Path) -> tuple[DictConfig | None, str | None]:
    """config.yaml as a DictConfig with the keys every verb needs to place the run."""
    path = Path(run_dir) / CONFIG
    text, problem = _read_text(path)
    if text is None:
        return None, problem
    try:
        cfg = OmegaConf.create(text)
    except Exception as err:  # YAML syntax, duplicate keys, a scalar document: all "not a config"
        return None, f"{path}: not readable YAML ({type(err).__name__})"
    problem = config_problem(cfg)
    return (None, f"{path}: {problem}") if problem else (cfg, None)


def read_metrics(run_dir: Path) -> tuple[pd.DataFrame | None, str | None]:
    """metrics.csv with numeric columns (anything else in a cell, infinities too, becomes NaN: plots cannot
    place it) and whole epochs 1, 2, ...;
    an empty file (a run before its first epoch end) is absent."""
    import pandas as pd

    path = Path(run_dir) / METRICS
    text, problem = _read_text(path)
    if text is None:
        return None, problem
    if not text.strip():
        return None, None
    if "\0" in text:
        return None, f"{path}: binary, not CSV"
    try:
        from io import StringIO

        df = pd.read_csv(StringIO(text))
    except (ValueError, pd.errors.ParserError) as err:
        return None, f"{path}: not CSV ({str(err).splitlines()[0][:80]})"
    if "epoch" not in df.columns:
        return None, f"{path}: no epoch column"
    df = df.apply(pd.to_numeric, errors="coerce").replace([float("inf"), float("-inf")], float("nan"))
    epochs = df["epoch"]
    if epochs.isna().any() or not (epochs == epochs.round()).all() or (epochs < 1).any():
        return None, f"{path}: the epoch column holds something other than epoch numbers"
    if df.empty:
        return None, None
    df["epoch"] = epochs.astype(int)
    return df, None


def read_spectrum(path: Path) -> tuple[np.ndarray | None, str | None]:
    """A spectrum .npy: one row of finite, non-negative numbers (never a pickled array)."""
    import numpy as np

    if not path.exists():
        return None, None
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        return None, f"{path}: not a readable .npy ({str(err).splitlines()[0][:60] if str(err) else 'truncated'})"
    if not isinstance(values, np.ndarray) or values.ndim != 1 or values.dtype.kind not in "fiu" or len(values) == 0:
        return None, f"{path}: not one row of numbers"
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        return None, f"{path}: non-finite values"
    return values, None


def check_output_folder(folder: Path, what: str) -> Path:
    """The folder a verb will write into can be made there: no file on its path, and the nearest existing
    folder writable. Cheap and writes nothing: verbs call it before reading the runs."""
    import os

    from ssl_zoo.common.errors import UserError

    folder = Path(folder).expanduser()
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {folder}: {probe} is a file, not a folder; choose another {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {what} {folder} (read-only or permission denied); choose another {what}")
    return folder


def output_folder(folder: Path, what: str) -> Path:
    """The folder a verb writes into, created (with its parents) or refused in one line: a path under a file,
    a read-only file system, no permission. Call it once everything to write is known, before writing."""
    from ssl_zoo.common.errors import UserError

    folder = check_output_folder(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {what} {folder}: {err.strerror or err}; choose another {what}") from err
    return check_output_folder(folder, what)


def warn_skipped(reasons: list[str]) -> None:
    """One stderr line per file a read-only verb left out, so nothing is dropped silently."""
    import sys

    for reason in reasons:
        print(f"ssl-zoo: skipped {reason}", file=sys.stderr, flush=True)
