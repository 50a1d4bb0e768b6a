"""What results.json and config.yaml must hold for the verbs to use them: ssl_zoo.runs.results_file and
ssl_zoo.runs.config_file read them through these checks, so a verb prints and averages what it gets without
checking it again."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_zoo.common.shown import shown
from ssl_zoo.runs.layout import STATUSES

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
        **{k: ("percent", True, False) for k in ("linear_top1", "linear_top5", "linear_sgd_top1",
                                                  "linear_sgd_top5")},  # null: a diverged SGD probe
        "knn_top1": ("percent", False, False), "online_probe_acc": ("percent", False, False),
        "status": ("status", True, False), "collapsed": ("bool", True, False)}
_PROBES = {"knn_top1": ("percent", False, True), "linear_top1": ("percent", True, True),
           "linear_top5": ("percent", True, False), "linear_sgd_top1": ("percent", True, False),
           "linear_sgd_top5": ("percent", True, False)}
_OBJECTS = {"projector": _PROBES, "random_init": _PROBES, "raw_pixels": _PROBES,
            "linear_lbfgs": {"top1": ("percent", False, True)},
            "linear_sgd": {"top1": ("percent", True, True), "epochs": ("count", False, True),
                           "n_train": ("count", False, True), "lr": ("number", False, True),
                           "batch_size": ("count", False, True)}}
_FINETUNE = {"n_labels": ("count", False, True), "top1": ("percent", True, True), "top5": ("percent", True, False)}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fields_problem(obj: dict, spec: dict[str, tuple[str, bool, bool]], where: str = "") -> str | None:
    for key, (kind, nullable, required) in spec.items():
        if key not in obj:
            if required:
                return f"{where}{key} is missing"
            continue
        value = obj[key]
        ok, words = _KINDS[kind]
        if not ((value is None and nullable) or (value is not None and ok(value))):
            return f"{where}{key} is {shown(value, 'json')}, not {words}"
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
            return f"{name} is {shown(sub, 'json')}, not an object"
        if sub is not None and (problem := _fields_problem(sub, spec, f"{name}.")):
            return problem
    return _finetune_problem(res.get("finetune")) or _sweep_problem(res.get("knn_sweep"))


def _finetune_problem(finetune: Any) -> str | None:
    if finetune is None:
        return None
    if not isinstance(finetune, dict) or not all(isinstance(v, dict) for v in finetune.values()):
        return f"finetune is {shown(finetune, 'json')}, not an object of objects"
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
        return f"knn_sweep is {shown(sweep, 'json')}, not an object"
    for key, v in sweep.items():
        parts = dict(p.partition("=")[::2] for p in str(key).split(","))
        if set(parts) != {"k", "T"}:
            return f"knn_sweep key {shown(key, 'json')} is not k=<k>,T=<T>"
        try:
            int(parts["k"]), float(parts["T"])
        except ValueError:
            return f"knn_sweep key {shown(key, 'json')} is not k=<k>,T=<T>"
        if not _KINDS["percent"][0](v):
            return f"knn_sweep[{key}] is {shown(v, 'json')}, not a percentage"
    return None


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
                return f"{key} is {shown(v, 'json') if v is not None else 'missing'}, not a name"
        for key in _CONFIG_COUNTS:
            v = OmegaConf.select(cfg, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                return f"{key} is {shown(v, 'json') if v is not None else 'missing'}, not a count"
        ablation = OmegaConf.select(cfg, "ablation.name", default="none")
        if not isinstance(ablation, str):
            return f"ablation.name is {shown(ablation, 'json')}, not a name"
    except Exception as err:  # an interpolation or node type OmegaConf cannot select through
        return f"{type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''}"
    return None
