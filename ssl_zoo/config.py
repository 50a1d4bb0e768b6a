"""Composing and checking the config: Hydra's compose API over the shipped conf/, errors as one line."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_zoo.errors import UserError

# Keys that change where or how a run is shown, not what it computes: left out of the run's identity.
NON_IDENTITY_KEYS = ("out_dir", "run_name", "resume", "progress_bar", "logger", "launcher", "device", "eval")


def conf_dir() -> Path:
    return Path(str(resources.files("ssl_zoo.conf")))


def _one_line(err: Exception) -> str:
    text = str(err)
    missing = re.search(r"Could not find '(\w+)/([^']*)'", text)
    if missing:
        group, option = missing.groups()
        choices = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
        return f"unknown {group} '{option}'; choices: {', '.join(choices)}"
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        return f"unknown config key '{override.group(1)}' (check the spelling; `ssl-zoo show` prints every key)"
    return text.strip().splitlines()[0]


def _compose(overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = compose("config", overrides=overrides)
            if "views" not in cfg:  # the method's own recipe unless the user picked one
                cfg = compose("config", overrides=[*overrides, f"views={cfg.method.default_views}"])
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UserError(_one_line(err)) from err
    return cfg


def _check_types(cfg, defaults, path: str = "") -> None:
    """Values keep the type of the shipped default (an int stays an int; null defaults accept anything)."""
    if isinstance(defaults, DictConfig):
        for key in defaults:
            if key in cfg:
                _check_types(cfg[key], defaults[key], f"{path}{key}.")
        return
    if defaults is None or cfg is None:
        return
    want = type(defaults)
    ok = isinstance(cfg, want) or (want is float and isinstance(cfg, int) and not isinstance(cfg, bool))
    if want is int and isinstance(cfg, bool):
        ok = False
    if not ok:
        raise UserError(f"{path[:-1]} must be {want.__name__}, got {cfg!r}")


def _check_values(cfg: DictConfig) -> None:
    t = cfg.trainer
    for key in ("epochs", "batch_size"):
        if int(t[key]) <= 0:
            raise UserError(f"trainer.{key} must be > 0, got {t[key]}")
    if float(t.lr) <= 0:
        raise UserError(f"trainer.lr must be > 0, got {t.lr}")
    choices = {"trainer.optimizer": ("sgd", "lars", "adamw"), "trainer.precision": ("auto", "bf16", "fp32"),
               "device": ("auto", "cpu", "cuda"), "resume": ("auto", "never"), "logger": ("csv", "tensorboard"),
               "trainer.lr_scaling": ("linear", "none")}
    for key, allowed in choices.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise UserError(f"{key}={value} is not one of {', '.join(allowed)}")


def load_config(overrides: list[str]) -> DictConfig:
    """The resolved, checked config for a list of Hydra overrides."""
    additions = [o for o in overrides if o.startswith("+")]
    if additions:
        raise UserError(f"'{additions[0]}' adds a key the config does not have; only existing keys can be set")
    cfg = _compose(overrides)
    groups = [o for o in overrides if o.split("=", 1)[0] in ("method", "data", "encoder", "views", "ablation",
                                                               "launcher", "experiment")]
    _check_types(cfg, _compose(groups))
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise UserError(_one_line(err)) from err
    _check_values(cfg)
    from ssl_zoo.method import method_class  # late: methods import torch, config loading should not

    method_class(str(cfg.method.name)).check_config(cfg)
    return cfg


def config_hash(cfg: DictConfig) -> str:
    identity = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in NON_IDENTITY_KEYS}
    return hashlib.sha1(OmegaConf.to_yaml(OmegaConf.create(identity)).encode()).hexdigest()[:8]


def run_dir_for(cfg: DictConfig) -> Path:
    if cfg.get("run_name"):
        name = str(cfg.run_name)
    else:
        name = (f"{cfg.method.name}-{cfg.ablation.name}-{cfg.data.name}-{cfg.encoder.name}-s{cfg.seed}-"
                f"{config_hash(cfg)}")
    return Path(str(cfg.out_dir)).expanduser() / name
