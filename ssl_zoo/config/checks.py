"""Everything a composed (or saved) config can get wrong, grouped by concern: types against the shipped yaml and
the schema, data, views, encoder, method, logger; each part's own rule is asked of its owner."""

from __future__ import annotations

import difflib
import os

from omegaconf import DictConfig, ListConfig, OmegaConf

from ssl_zoo.common.errors import UserError
from ssl_zoo.common.paths import conf_dir
from ssl_zoo.common.shown import shown
from ssl_zoo.config import schema
from ssl_zoo.config.ablations import check_ablation


def check_config(cfg: DictConfig, defaults: DictConfig) -> None:
    """Everything a composed (or saved) config can get wrong, first to last: what the method means, types,
    ranges, the parts, optional packages and devices, and whether any machine could hold the model."""
    from ssl_zoo.config import footprint  # late: these import torch
    from ssl_zoo.data.streaming.gpu_decode import check_decode
    from ssl_zoo.evaluation.finetune import check_data

    check_ablation(cfg)  # before anything else: Hydra silently adds keys a method lacks
    _check_types(cfg, defaults)
    schema.check(cfg, schema.ConfigSchema)
    if cfg.launcher.get("name") == "slurm":
        schema.check(cfg.launcher, schema.SlurmLauncherSchema, "launcher.")
    _check_data(cfg)
    _check_views(cfg)
    _check_encoder(cfg)
    _check_method(cfg)
    _check_logger(cfg)
    check_data(cfg)  # eval.protocol=finetune on a streamed dataset: refused before training, not after
    check_decode(cfg)  # data.decode=gpu without a CUDA device: one line before anything is written
    footprint.check(cfg)


def _check_types(cfg, defaults, path: str = "") -> None:
    """Values keep the type of the shipped default (an int stays an int, a node stays a node, a list a list;
    null defaults accept anything)."""
    key = path[:-1]
    if defaults is None or (cfg is None and not isinstance(defaults, DictConfig)):
        return
    if isinstance(defaults, DictConfig):
        if not isinstance(cfg, DictConfig):
            some = ", ".join(f"{key}.{k}" for k in list(defaults)[:2])
            raise UserError(f"{key}={shown(cfg)} replaces a config node with a value; set its keys instead "
                            f"(e.g. {some}), or pick an option of a group with group=name")
        for k in defaults:
            if k in cfg and not OmegaConf.is_missing(defaults, k) and not OmegaConf.is_missing(cfg, k):
                _check_types(cfg[k], defaults[k], f"{path}{k}.")
        return
    if isinstance(defaults, ListConfig):
        if not isinstance(cfg, ListConfig):
            raise UserError(f"{key}={shown(cfg)} has the wrong type; set {key} to a list like "
                            f"{shown(defaults)}")
        return
    if isinstance(cfg, DictConfig | ListConfig):
        raise UserError(f"{key}={shown(cfg)} has the wrong type; set {key} to "
                        f"{schema.describe(type(defaults), {})}")
    if schema.declared(key) is not None:  # typed by the schema (check() below), unions included: bool | "auto"
        return
    want = type(defaults)
    ok = isinstance(cfg, want) or (want is float and isinstance(cfg, int) and not isinstance(cfg, bool))
    if want is int and isinstance(cfg, bool):
        ok = False
    if not ok:
        raise UserError(f"{key}={shown(cfg)} has the wrong type; set {key} to {schema.describe(want, {})}")


def _check_data(cfg: DictConfig) -> None:
    d = cfg.data
    known = sorted(p.stem for p in (conf_dir() / "data").glob("*.yaml"))
    if d.name not in known:
        raise UserError(f"data.name={d.name!r} is not a dataset ssl-zoo reads; pick data=<{'|'.join(known)}>")
    n = d.get("train_subset")  # conf/data_keys.yaml: null or a count
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise UserError(f"data.train_subset={n!r}: give a number of train images >= 1, or null for all")
    for key in ("mean", "std"):
        if len(d[key]) != d.channels:
            raise UserError(f"data.{key} has {len(d[key])} values for data.channels={d.channels}; "
                            f"give one per channel")
    workers, most = d.get("workers"), max(256, 8 * (os.cpu_count() or 1))
    if isinstance(workers, int) and workers > most:  # each one a process: this many would bring a machine down
        raise UserError(f"data.workers={workers} DataLoader processes is more than any machine runs; at most "
                        f"{most} (this machine has {os.cpu_count()} cores)")


def _check_views(cfg: DictConfig) -> None:
    from ssl_zoo.data.views import build_view_maker

    maker = build_view_maker(cfg.views, list(cfg.data.mean), list(cfg.data.std))
    size = int(cfg.data.image_size)
    for name, r in zip(cfg.views.crops, maker.recipes):
        where = f"views.crops.{name}"
        if r.n < 1:
            raise UserError(f"{where}.n={r.n}: a crop recipe makes at least one view; set {where}.n >= 1")
        if not 1 <= r.size <= size:
            raise UserError(f"{where} makes {r.size}px crops but the images are {size}px (data.image_size); "
                            f"set {where}.size (or size_frac) so crops are 1..{size}px")
        if not 0 < r.scale[0] <= r.scale[1] <= 1:
            raise UserError(f"{where}.scale={list(r.scale)} is not a crop area range; use 0 < low <= high <= 1")


def _check_encoder(cfg: DictConfig) -> None:
    from ssl_zoo.models.encoders import TORCHVISION_ARCHS, pretrained_problem  # late: imports torch

    problem = pretrained_problem(cfg.encoder)
    if problem:
        raise UserError(problem)
    arch = str(cfg.encoder.arch)
    if arch == "small_cnn" or (arch in TORCHVISION_ARCHS and cfg.encoder.name != "timm"):
        return
    import timm

    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "timm.list_models() lists the names"
        raise UserError(f"unknown encoder.arch '{arch}': not small_cnn, a torchvision ResNet or a timm model; {hint}")
    size, patch = int(cfg.data.image_size), cfg.encoder.get("patch_size")
    if patch is not None and size % int(patch):
        raise UserError(f"data.image_size={size} is not a multiple of encoder.patch_size={patch}; "
                        "change one of them")


def _check_method(cfg: DictConfig) -> None:
    from ssl_zoo.models.method import method_class  # late: methods import torch

    schema.check_heads(cfg.method)
    schema.check_method_knobs(cfg.method)
    method_class(str(cfg.method.name)).check_config(cfg)


def _check_logger(cfg: DictConfig) -> None:
    """Optional packages a config needs are there before anything is written."""
    import importlib.util

    if cfg.logger == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise UserError("logger=tensorboard needs the tensorboard package: pip install 'ssl-zoo[tensorboard]' "
                        "(or use logger=csv)")
    if cfg.logger == "wandb" and importlib.util.find_spec("wandb") is None:
        from ssl_zoo.train.wandb_log import MISSING

        raise UserError(MISSING)
