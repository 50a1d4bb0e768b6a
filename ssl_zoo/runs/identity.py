"""A run's identity: its configuration hash, its directory name, and the header of its results."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssl_zoo.common.paths import absolute

# Keys that change where or how a run is shown, not what it computes: left out of the run's identity.
NON_IDENTITY_KEYS = ("out_dir", "run_name", "resume", "progress_bar", "logger", "launcher", "device", "eval")


# Keys added after runs existed ("group.path", key, default): left out of the hash at their default (what their
# absence meant), else hashed last in their group, so run directories made before them keep their names and
# resume. Keys that change how fast a run goes but not what it computes never enter the hash (SPEED_KEYS).
LATE_KEYS = (("data", "train_subset", None), ("trainer", "steps", None), ("trainer", "compile_mode", "default"),
             ("data", "decode", "cpu"), ("method.predictor", "kind", "mlp"), ("method.predictor", "f_momentum", 0.3),
             ("method.predictor", "directpred_eps", 0.01), ("method.predictor", "directpred_freq", 1),
             ("method.predictor", "weight_decay_mult", 1.0), ("monitor", "lidar_images", 1024), ("monitor", "lidar_views", 2))


SPEED_KEYS = (("data", "workers"), ("data", "index_dir"))


def config_hash(cfg: DictConfig) -> str:
    identity = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in NON_IDENTITY_KEYS}
    for group, key, default in LATE_KEYS:
        node = _node(identity, group)
        if node is not None and key in node:
            value = node.pop(key)
            if value != default:
                node[key] = value
    for group, key in SPEED_KEYS:
        if isinstance(identity.get(group), dict):
            identity[group].pop(key, None)
    return hashlib.sha1(OmegaConf.to_yaml(OmegaConf.create(identity)).encode()).hexdigest()[:8]


def _node(tree: dict, dotted: str) -> dict | None:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree if isinstance(tree, dict) else None


def encoder_label(cfg: DictConfig) -> str:
    """The encoder as a reader knows it (results, tables): encoder=timm runs are named by their timm model."""
    name = str(cfg.encoder.name)
    return f"{cfg.encoder.arch} (timm)" if name == "timm" and cfg.encoder.get("arch") else name


def run_dir_for(cfg: DictConfig) -> Path:
    if cfg.get("run_name"):
        name = str(cfg.run_name)
    else:
        name = (f"{cfg.method.name}-{cfg.ablation.name}-{cfg.data.name}-{cfg.encoder.name}-s{cfg.seed}-"
                f"{config_hash(cfg)}")
    return absolute(str(cfg.out_dir)) / name


def results_header(cfg: DictConfig, steps_per_epoch: int | None = None) -> dict:
    """What every results.json starts with, whatever the run's status. "epochs" counts the epochs the run trains,
    as metrics.csv numbers them: a run set by trainer.steps (trainer.epochs then unused) also records "steps" and
    "steps_per_epoch", so a partial last epoch reads plainly."""
    header = {"method": cfg.method.name, "ablation": cfg.ablation.name, "data": cfg.data.name,
              "encoder": encoder_label(cfg), "epochs": int(cfg.trainer.epochs), "seed": int(cfg.seed)}
    steps = cfg.trainer.get("steps")
    if steps is not None and steps_per_epoch:
        header.update(epochs=math.ceil(int(steps) / steps_per_epoch), steps=int(steps),
                      steps_per_epoch=int(steps_per_epoch))
    return header
