"""Evaluating a run: right after training (run.train) or later from its run directory (`ssl-zoo eval`).

The trained numbers always come from the ONLINE backbone (method.backbone), never from a momentum/teacher copy.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from ssl_zoo import monitors, schema
from ssl_zoo.checkpoint import load_checkpoint, write_json
from ssl_zoo.data import ImageData, load_data
from ssl_zoo.errors import UserError
from ssl_zoo.evaluation import FeatureCache, evaluate_backbone, evaluate_method
from ssl_zoo.finetune import check_data as check_finetune_data
from ssl_zoo.finetune import evaluate_finetune
from ssl_zoo.rundir import read_results
from ssl_zoo.trainer import build_method, pick_device, pretrain_size, run_length

# What the online probe number is (printed next to it): users of other frameworks mix online and offline numbers.
ONLINE_PROBE_NOTE = ("online probe: linear classifier trained during pretraining on detached features of augmented "
                     "train batches (each batch scored before its update); not the offline linear probe")


def evaluate_trained(method: nn.Module, data: ImageData, cfg: DictConfig, device, run_dir: Path | None,
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
        from ssl_zoo.tensorboard import log_final

        log_final(run_dir, cfg, out, int(rows[-1]["step"]) if rows else 0)
    return out


def load_run_config(run_dir: Path) -> DictConfig:
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not an ssl-zoo run directory (no config.yaml)")
    try:
        cfg = OmegaConf.load(path)
        for key in ("method.name", "data.name", "encoder.name", "trainer.epochs", "seed"):
            if OmegaConf.select(cfg, key) is None:
                raise ValueError(f"no {key}")
    except Exception as err:
        raise UserError(f"{path} is not a readable ssl-zoo run config ({err})") from err
    return _with_eval_defaults(cfg)


def _with_eval_defaults(cfg: DictConfig) -> DictConfig:
    """eval.* keys added to ssl-zoo after the run was made take their shipped defaults (eval settings are not
    part of a run's identity), so `ssl-zoo eval eval.protocol=finetune` works on older runs too."""
    from ssl_zoo.config import load_config

    shipped = OmegaConf.to_container(load_config([]).eval)
    own = OmegaConf.to_container(cfg.eval) if "eval" in cfg else {}
    cfg.eval = OmegaConf.merge(shipped, own)
    return cfg


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """`eval.*` and `device` may be changed at evaluation time; the rest is the run's own config."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not (key.startswith("eval.") or key == "device"):
            raise UserError(f"'{item}': ssl-zoo eval takes run_dir=<path> plus eval.<key>=<value> or device=<value>")
        old = OmegaConf.select(cfg, key, default="<missing>")
        if old == "<missing>":
            raise UserError(f"unknown config key '{key}'")
        new = yaml.safe_load(value)
        if isinstance(old, ListConfig):
            old = list(old)
        if old is not None and new is not None and not isinstance(new, type(old)) and not (
                isinstance(old, float) and isinstance(new, int)):
            raise UserError(f"{key} must be {type(old).__name__}, got {value!r}")
        OmegaConf.update(cfg, key, new)
    schema.check(cfg.eval, schema.EvalSchema, "eval.")  # types and ranges (eval.knn_k=null accepts any type above)
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device={cfg.device} is not one of auto, cpu, cuda")
    return cfg


def evaluate_run_dir(run_dir: Path, overrides: list[str] = ()) -> dict:
    """Evaluates the newest checkpoint of a run directory and merges the numbers into its results.json.
    A run without results.json is 'unfinished' unless its checkpoint is at the last step."""
    from ssl_zoo.run import results_header  # late: run imports this module

    start = time.perf_counter()
    cfg = apply_overrides(load_run_config(run_dir), list(overrides))
    check_finetune_data(cfg)
    device = pick_device(cfg)
    state = load_checkpoint(run_dir)
    if state is None:
        raise UserError(f"{run_dir} has no checkpoint yet (checkpoints/last.pt): nothing to evaluate")
    data = load_data(cfg.data)
    method = build_method(cfg)
    try:
        method.load_state_dict(state["method"])
    except (KeyError, RuntimeError) as err:
        raise UserError(f"the checkpoint in {run_dir} does not fit its config.yaml ({type(err).__name__})") from err
    method.to(device)
    rows, step = list(state.get("rows", [])), int(state["step"])
    total = run_length(cfg, pretrain_size(data) // int(cfg.trainer.batch_size))
    previous = read_results(run_dir) or {}
    status = previous.get("status")
    if status in (None, "unfinished", "failed"):  # a crash after the last step (in evaluation) ends here
        status = "finished" if step >= total else "unfinished"
        previous.pop("error", None)
    results = {**previous, **results_header(cfg), "status": status}
    if "wall_s" not in previous or status == "unfinished":  # training numbers from the checkpoint
        elapsed = float(state.get("elapsed", 0.0))
        results.update({"wall_s": round(elapsed, 2),
                        "images_per_s": round(step * int(cfg.trainer.batch_size) / max(elapsed, 1e-9), 1)})
        if rows:
            results.update(monitors.final_collapse(cfg, rows[-1]))  # `collapsed` and the last collapse metrics
    results.update(evaluate_trained(method, data, cfg, device, run_dir, rows))
    results.update({"evaluated_step": step, "total_steps": total, "epochs_done": int(rows[-1]["epoch"]) if rows else 0,
                    "eval_s": round(time.perf_counter() - start, 2)})
    write_json(run_dir / "results.json", results)
    return results
