"""Evaluating a run: right after training (run.train) or later from its run directory (`ssl-zoo eval`).

The trained numbers always come from the ONLINE backbone (method.backbone), never from a momentum/teacher copy.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from ssl_zoo.common.errors import UserError
from ssl_zoo.config import schema
from ssl_zoo.config.load import check_run_config
from ssl_zoo.data.datasets import load_data
from ssl_zoo.data.source import DataSource
from ssl_zoo.evaluation import monitors
from ssl_zoo.evaluation.finetune import check_data as check_finetune_data
from ssl_zoo.evaluation.finetune import evaluate_finetune
from ssl_zoo.evaluation.frozen import FeatureCache, evaluate_backbone, evaluate_method
from ssl_zoo.runs.checkpoint import checkpoint_stamp, files_stamp, load_checkpoint
from ssl_zoo.runs.config_file import config_or_problem
from ssl_zoo.runs.identity import results_header
from ssl_zoo.runs.layout import CONFIG, RESULTS
from ssl_zoo.runs.results_file import results_or_problem, write_results
from ssl_zoo.runs.runlock import acquire, refuse_if_held
from ssl_zoo.train.build import build_method, pick_device
from ssl_zoo.train.schedule import run_length

# What the online probe number is (printed next to it): users of other frameworks mix online and offline numbers.
ONLINE_PROBE_NOTE = ("online probe: linear classifier trained during pretraining on detached features of augmented "
                     "train batches (each batch scored before its update); not the offline linear probe")


def evaluate_trained(method: nn.Module, data: DataSource, cfg: DictConfig, device, run_dir: Path | None,
                     rows: list[dict]) -> dict:
    """Offline probes of the trained method, the random-init and raw-pixel baselines the config asks for, and
    the last epoch's online probe accuracy (copied from metrics, labelled as online)."""
    cache = FeatureCache(run_dir / "features" if run_dir is not None else None)
    out = evaluate_method(method, data, cfg, device, cache)
    if cfg.eval.random_init:
        initial = build_method(cfg).backbone.to(device)  # same seed: the weights pretraining started from
        out["random_init"] = evaluate_backbone(initial, data, cfg, device, cache, "random_init")
    if cfg.eval.raw_pixels:
        out["raw_pixels"] = evaluate_backbone(nn.Flatten(), data, cfg, device, FeatureCache(None), "raw_pixels")
    if cfg.eval.protocol == "finetune":
        out["finetune"] = evaluate_finetune(method.backbone, method.feat_dim, data, cfg, device, run_dir)
    online = rows[-1].get("online_probe_acc") if rows else None
    if online is not None:
        out["online_probe_acc"] = round(float(online), 2)
    if run_dir is not None and cfg.get("logger") in ("tensorboard", "wandb"):
        from ssl_zoo.train.tensorboard import log_final

        log_final(run_dir, cfg, out, int(rows[-1]["step"]) if rows else 0)
    return out


def load_run_config(run_dir: Path) -> DictConfig:
    """A run directory's config.yaml, held against the same schema a new run's config is (a hand-edited value
    that training would refuse is refused here too, in one line, before anything is loaded or written)."""
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist" if not run_dir.exists()
                        else f"{run_dir} is a file, not a run directory")
    cfg, problem = config_or_problem(run_dir)
    if cfg is None:
        raise UserError(f"{run_dir} is not an ssl-zoo run directory (no config.yaml)" if problem is None
                        else f"{problem}; it is not a usable ssl-zoo run config")
    cfg = _with_defaults(cfg)
    check_run_config(cfg, run_dir / CONFIG)  # load_config's checks: schema ranges, the parts, sizes
    return cfg


def _with_defaults(cfg: DictConfig) -> DictConfig:
    """Keys added to ssl-zoo after the run was made take their shipped defaults: eval.* (not part of a run's
    identity, so `ssl-zoo eval eval.protocol=finetune` works on older runs too) and the top-level, trainer and
    monitor keys that did not exist then (they were added at the defaults that reproduce older runs)."""
    shipped = _shipped_defaults()
    for node in ("eval", "trainer", "monitor"):
        own = cfg.get(node)
        own = OmegaConf.to_container(own) if isinstance(own, DictConfig) else ({} if own is None else own)
        if isinstance(own, dict):  # anything else is left for the schema check to name
            cfg[node] = OmegaConf.merge(shipped[node], own)
    for key in ("deterministic", "device", "out_dir", "run_name", "resume", "logger", "progress_bar"):
        if key not in cfg:
            cfg[key] = shipped[key]
    return cfg


@functools.lru_cache(maxsize=1)
def _shipped_defaults() -> dict:
    """The shipped config as plain data (composed once per process; callers merge copies of its nodes)."""
    from ssl_zoo.config.load import load_config

    return OmegaConf.to_container(load_config([]))


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """`eval.*` and `device` may be changed at evaluation time; the rest is the run's own config. The changed
    config is held against the same schema (types and ranges) as a new run's."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not (key.startswith("eval.") or key == "device"):
            raise UserError(f"'{item}': ssl-zoo eval takes run_dir=<path> plus eval.<key>=<value> or device=<value>")
        try:
            old = OmegaConf.select(cfg, key, default="<missing>")
        except OmegaConfBaseException:
            old = "<missing>"
        if isinstance(old, str) and old == "<missing>":
            raise UserError(f"unknown config key '{key}'")
        try:
            new = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise UserError(f"{item}: the value is not readable ({type(err).__name__})") from err
        if isinstance(old, ListConfig):
            old = list(old)
        if isinstance(old, DictConfig):
            raise UserError(f"{key} is a group of keys; set its keys ({key}.<name>=<value>)")
        if old is not None and new is not None and not isinstance(new, type(old)) and not (
                isinstance(old, float) and isinstance(new, int)):
            raise UserError(f"{key} must be {type(old).__name__}, got {value!r}")
        OmegaConf.update(cfg, key, new)
    schema.check(cfg.eval, schema.EvalSchema, "eval.")  # types and ranges (eval.knn_k=null accepts any type above)
    schema.check(cfg, schema.ConfigSchema)  # device and the rest, as training checks them
    return cfg


def check_eval_fits(cfg: DictConfig, train_images: int) -> None:
    """Probe settings that would give a number other than the one they name: more kNN neighbours than the
    probes' train images (k would silently shrink). `train_images`: the labelled train split's size."""
    max_train = cfg.eval.get("max_train")
    n_train = train_images if max_train is None else min(train_images, int(max_train))
    k = cfg.eval.get("knn_k")
    if k is not None and int(k) > n_train:
        raise UserError(f"eval.knn_k={k} is more than the {n_train} train images the probes use; set eval.knn_k "
                        f"<= {n_train} (or null: chosen from the data)")


def same_probes(a: dict, b: dict) -> bool:
    """Whether two probe results were scored alike: the same kNN k and T and linear probe train images."""
    return all(a.get(k) == b.get(k) for k in ("knn_k", "knn_t")) and (
        (a.get("linear") or {}).get("n_train") == (b.get("linear") or {}).get("n_train"))


SGD_KEYS = ("linear_sgd_top1", "linear_sgd_top5", "linear_sgd")  # eval.protocol=sgd's numbers and details


def stale(key: str, earlier, fresh: dict, same_step: bool) -> bool:
    """Whether an earlier evaluation's entry that this one did not recompute must go: SGD numbers that still hold
    are already carried into `fresh` (keep_sgd), the rest go (linear_lbfgs: an older file's copy of the L-BFGS
    numbers, now linear_top1 itself); projector and fine-tuning numbers hold for their checkpoint only; probe
    numbers compare only when scored alike."""
    if key in (*SGD_KEYS, "linear_lbfgs"):
        return True
    if key in ("projector", "finetune") and not same_step:
        return True
    return key in ("projector", "random_init", "raw_pixels") and not same_probes(earlier, fresh)


def keep_sgd(earlier: dict, fresh: dict, same_step: bool) -> None:
    """An earlier eval.protocol=sgd evaluation that this one did not repeat stays (for the run and its random-init
    baseline) while it describes the same weights and train images: a later `ssl-zoo eval` with the default
    protocol adds to it instead of erasing it. The random init is the same weights at every checkpoint."""
    for name, still_same in ((None, same_step), ("random_init", True)):
        old = earlier if name is None else earlier.get(name) or {}
        new = fresh if name is None else fresh.get(name)
        if not isinstance(new, dict) or "linear_sgd" in new or not isinstance(old.get("linear_sgd"), dict):
            continue
        if still_same and old["linear_sgd"].get("n_train") == (new.get("linear") or {}).get("n_train"):
            new.update({key: old[key] for key in SGD_KEYS if key in old})


@dataclass
class _Ready:
    """A run checked and loaded for evaluation, before its lock is taken."""
    cfg: DictConfig
    previous: dict  # its results.json ({} when none)
    device: object
    state: dict  # the newest checkpoint
    data: DataSource
    method: nn.Module  # with the checkpoint's weights, on the CPU
    stamp: tuple  # the run's files as they were when read


def evaluate_run_dir(run_dir: Path, overrides: list[str] = ()) -> dict:
    """Evaluates the newest checkpoint of a run directory and merges the numbers into its results.json, holding
    the run's lock (`ssl-zoo eval` and api.evaluate alike: a run that is training is refused in one line).
    A run without results.json is 'unfinished' unless its checkpoint is at the last step.
    Everything a user can get wrong is checked before the lock is taken: a refused evaluation writes nothing,
    not even run.lock."""
    start = time.perf_counter()
    refuse_if_held(run_dir)  # first, as before: a run in training is named as such, not by what it lacks yet
    ready = _prepare(run_dir, list(overrides))
    lock = acquire(run_dir, "ssl-zoo eval", create=False, leave_as_found=True)
    try:
        if _files_stamp(run_dir) != ready.stamp:  # written between the checks and the lock: read it again
            ready = _prepare(run_dir, list(overrides))
        return _evaluate(run_dir, ready, start)
    finally:
        lock.release()


def _files_stamp(run_dir: Path) -> tuple:
    return files_stamp(run_dir, (CONFIG, RESULTS)) + checkpoint_stamp(run_dir)


def _prepare(run_dir: Path, overrides: list[str]) -> _Ready:
    """Every check of `ssl-zoo eval` that can fail (config, overrides, results.json, checkpoint, data, probe
    sizes, weights that fit the config), without writing anything."""
    stamp = _files_stamp(run_dir)
    cfg = apply_overrides(load_run_config(run_dir), overrides)
    check_finetune_data(cfg)
    if not os.access(run_dir, os.W_OK | os.X_OK):  # before minutes of probes whose results could not be kept
        raise UserError(f"cannot write to {run_dir} (read-only or permission denied): evaluating it would lose "
                        "the results")
    previous, problem = results_or_problem(run_dir)
    if problem:
        raise UserError(f"{problem}; move it away to evaluate the run again (it is never overwritten)")
    device = pick_device(cfg)
    state = load_checkpoint(run_dir)
    if state is None:
        raise UserError(f"{run_dir} has no checkpoint yet (checkpoints/last.pt): nothing to evaluate")
    data = load_data(cfg.data)
    check_eval_fits(cfg, len(data.train_y))
    method = build_method(cfg)
    try:
        method.load_state_dict(state["method"])
    except (KeyError, RuntimeError) as err:
        raise UserError(f"the checkpoint in {run_dir} does not fit its config.yaml ({type(err).__name__})") from err
    return _Ready(cfg, previous or {}, device, state, data, method, stamp)


def _evaluate(run_dir: Path, ready: _Ready, start: float) -> dict:
    cfg, previous, state, data = ready.cfg, ready.previous, ready.state, ready.data
    method = ready.method.to(ready.device)
    rows, step = list(state.get("rows", [])), int(state["step"])
    steps_per_epoch = data.num_pretrain_images // int(cfg.trainer.batch_size)
    total = run_length(cfg, steps_per_epoch)
    status = previous.get("status")
    if status in (None, "unfinished", "failed"):  # a crash after the last step (in evaluation) ends here
        status = "finished" if step >= total else "unfinished"
        previous.pop("error", None)
    same_step = previous.get("evaluated_step", total if previous.get("status") == "finished" else None) == step
    results = {**previous, **results_header(cfg, steps_per_epoch), "status": status}
    if "wall_s" not in previous or status == "unfinished":  # training numbers from the checkpoint
        elapsed = float(state.get("elapsed", 0.0))
        results.update({"wall_s": round(elapsed, 2),
                        "images_per_s": round(step * int(cfg.trainer.batch_size) / max(elapsed, 1e-9), 1)})
        if rows:
            results.update(monitors.final_collapse(cfg, rows[-1]))  # `collapsed` and the last collapse metrics
    fresh = evaluate_trained(method, data, cfg, ready.device, run_dir, rows)
    keep_sgd(previous, fresh, same_step)
    results.update(fresh)
    for key in [k for k in results if k not in fresh and stale(k, results[k], fresh, same_step)]:
        del results[key]
    results.update({"evaluated_step": step, "total_steps": total, "epochs_done": int(rows[-1]["epoch"]) if rows else 0,
                    "eval_s": round(time.perf_counter() - start, 2)})
    write_results(run_dir, results)
    return results
