"""Composing and checking the config: Hydra's compose API over the shipped conf/, errors as one line.

`load_config` checks everything a config alone can get wrong (unknown groups and keys, types and ranges
against ssl_zoo/schema.py and the shipped yaml, views, encoder names, the method's own rules) without touching
the file system; `check_data_root` and rundir.check_existing check paths right before a run starts.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import re
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_zoo import schema
from ssl_zoo.ablations import check_ablation
from ssl_zoo.errors import UserError

# Keys that change where or how a run is shown, not what it computes: left out of the run's identity.
NON_IDENTITY_KEYS = ("out_dir", "run_name", "resume", "progress_bar", "logger", "launcher", "device", "eval")
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50")  # built by torchvision unless encoder=timm
GROUPS = ("method", "data", "encoder", "views", "ablation", "launcher", "experiment")


def conf_dir() -> Path:
    return Path(str(resources.files("ssl_zoo.conf")))


def choices(group: str) -> list[str]:
    """The options of a config group: the yaml files shipped in conf/<group>/."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def _one_line(err: Exception) -> str:
    text = str(err)
    missing = re.search(r"Could not find '(\w+)/([^']*)'", text)
    if missing:
        group, option = missing.groups()
        return f"unknown {group} '{option}'; choices: {', '.join(choices(group))}"
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        return unknown_key(override.group(1))
    return text.strip().splitlines()[0]


def _all_keys(node, prefix: str = "") -> list[str]:
    out = []
    for key in node:
        value = node[key] if not OmegaConf.is_missing(node, key) else None
        out += _all_keys(value, f"{prefix}{key}.") if isinstance(value, DictConfig) else [f"{prefix}{key}"]
    return out


def closest_keys(key: str) -> list[str]:
    """Existing config keys close to a misspelt one: whole dotted keys first (trainer.epoch -> trainer.epochs),
    then on the last part alone (epochs -> trainer.epochs)."""
    known = _all_keys(_shipped_defaults(()))
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
    if not close:
        last = difflib.get_close_matches(key.rsplit(".", 1)[-1], [k.rsplit(".", 1)[-1] for k in known], cutoff=0.8)
        close = [k for k in known if k.rsplit(".", 1)[-1] in last]
    return close[:3]


def unknown_key(key: str) -> str:
    """The one-line error for a key the config lacks, with the closest existing keys."""
    close = closest_keys(key)
    hint = f"did you mean {close[0]}?" if close else "`ssl-zoo show` prints every key"
    return f"unknown config key '{key}'; {hint}"


def flag_hint(flag: str, value: str | None) -> str:
    """`--epochs 3` typed as a flag: config keys are key=value overrides."""
    name, eq, inline = flag.lstrip("-").partition("=")
    value = inline if eq else value
    close = closest_keys(name.replace("-", "_"))
    if close:
        return f"{flag} is not an option; config keys are set as key=value: did you mean {close[0]}={value or '...'}?"
    return f"{flag} is not an option; config keys are set as key=value (`ssl-zoo show` prints every key)"


def groups_help() -> str:
    """Every config group with its choices (`ssl-zoo train --help`)."""
    lines = ["config groups (group=choice):"]
    lines += [f"  {g:<10} {', '.join(choices(g))}" for g in GROUPS]
    lines.append("keys: key=value, e.g. trainer.epochs=5 seed=1 out_dir=runs/x (`ssl-zoo show` prints every key)")
    return "\n".join(lines)


def _check_groups(overrides: list[str]) -> None:
    """A group option must be one the package ships. Hydra skips an `optional` group's missing option
    silently (experiment=collapse_stduy would train the default config), so every group is checked here."""
    for o in overrides:
        key = _key(o)
        if key in GROUPS and "=" in o:
            value = o.split("=", 1)[1]
            if value in ("null", "") and key in ("views", "experiment"):  # null: the default (none / the method's)
                continue
            if "," not in value and value not in choices(key):  # a,b lists are sweeps: expanded before this
                raise UserError(f"unknown {key} '{value}'; choices: {', '.join(choices(key))}")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("~+")


def _compose(overrides: list[str]) -> DictConfig:
    _check_groups(overrides)
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            if not any(_key(o) == "views" for o in overrides):  # the method's own recipe unless the user picked one
                # composed without views.* overrides first: they need the views group that this picks
                method = compose("config", overrides=[o for o in overrides if not _key(o).startswith("views.")])
                overrides = [*overrides, f"views={method.method.default_views}"]
            cfg = compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UserError(_one_line(err)) from err
    return cfg


@functools.lru_cache(maxsize=64)
def _shipped_defaults(groups: tuple[str, ...]) -> DictConfig:
    """The config the chosen groups ship with, before the user's key overrides (read-only; cached)."""
    return _compose(list(groups))


def _check_types(cfg, defaults, path: str = "") -> None:
    """Values keep the type of the shipped default (an int stays an int; null defaults accept anything)."""
    if isinstance(defaults, DictConfig):
        for key in defaults:
            if key in cfg and not OmegaConf.is_missing(defaults, key) and not OmegaConf.is_missing(cfg, key):
                _check_types(cfg[key], defaults[key], f"{path}{key}.")
        return
    if defaults is None or cfg is None:
        return
    want = type(defaults)
    ok = isinstance(cfg, want) or (want is float and isinstance(cfg, int) and not isinstance(cfg, bool))
    if want is int and isinstance(cfg, bool):
        ok = False
    if not ok:
        key = path[:-1]
        raise UserError(f"{key}={cfg!r} has the wrong type; set {key} to {schema.describe(want, {})}")


def _check_method(cfg: DictConfig) -> None:
    from ssl_zoo.method import method_class  # late: methods import torch

    schema.check_heads(cfg.method)
    schema.check_method_knobs(cfg.method)
    method_class(str(cfg.method.name)).check_config(cfg)


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


def _check_views(cfg: DictConfig) -> None:
    from ssl_zoo.views import build_view_maker

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


def load_config(overrides: list[str]) -> DictConfig:
    """The resolved, checked config for a list of Hydra overrides."""
    additions = [o for o in overrides if o.startswith("+")]
    if additions:
        raise UserError(f"'{additions[0]}' adds a key the config does not have; only existing keys can be set")
    cfg = _compose(overrides)
    if isinstance(cfg.get("resume"), bool):  # resume=true / resume=false: the natural spellings of auto / never
        cfg.resume = "auto" if cfg.resume else "never"
    check_ablation(cfg)  # before anything else: Hydra silently adds keys a method lacks
    groups = [o for o in overrides if _key(o) in GROUPS]
    _check_types(cfg, _shipped_defaults(tuple(groups)))
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise UserError(_one_line(err)) from err
    schema.check(cfg, schema.ConfigSchema)
    _check_data(cfg)
    _check_views(cfg)
    _check_encoder(cfg)
    _check_method(cfg)
    run_name = cfg.run_name
    if run_name is not None and (str(run_name) in ("", ".", "..") or Path(str(run_name)).is_absolute()
                                 or ".." in Path(str(run_name)).parts):
        raise UserError(f"run_name={run_name!r} must be a folder name inside out_dir; use out_dir= to move runs")
    _check_logger(cfg)
    from ssl_zoo.finetune import check_data  # late: imports torch

    check_data(cfg)  # eval.protocol=finetune on a streamed dataset: refused before training, not after
    cfg.out_dir = str(absolute(str(cfg.out_dir)))  # one run directory, whatever the working directory is later
    return cfg


def absolute(path: str | Path) -> Path:
    """A user path made absolute against the working directory now (~ expanded; symlinks kept)."""
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _check_logger(cfg: DictConfig) -> None:
    """Optional packages a config needs are there before anything is written."""
    import importlib.util

    if cfg.logger == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise UserError("logger=tensorboard needs the tensorboard package: pip install 'ssl-zoo[tensorboard]' "
                        "(or use logger=csv)")
    if cfg.logger == "wandb" and importlib.util.find_spec("wandb") is None:
        from ssl_zoo.wandb_log import MISSING

        raise UserError(MISSING)


def check_data_root(cfg: DictConfig) -> None:
    """A dataset that lives in a user folder needs that folder (checked before a run writes anything)."""
    d = cfg.data
    if d.name == "digits" or d.download:
        return
    if d.root is None:
        raise UserError(f"data={d.name} needs data.root=<folder with the {d.name} files>")
    root = Path(str(d.root)).expanduser()
    if not root.exists():
        raise UserError(f"data.root={root} does not exist; set data.root to the folder holding {d.name}"
                        + (" (or data.download=true with a network)" if d.name != "imagefolder" else ""))
    if not root.is_dir():
        raise UserError(f"data.root={root} is a file, not a folder; set data.root to the folder holding {d.name}")
    if not os.access(root, os.R_OK | os.X_OK):
        raise UserError(f"data.root={root} cannot be read (permissions); fix them or copy the data elsewhere")


# Keys added to every config after runs were made: left out of the identity when null (what their absence
# meant), else hashed last in their group (where the experiment files that set them used to put them), so run
# directories made before them keep their names and resume.
# Keys added after runs existed: left out of the hash at their default, so older run directories keep their
# names. Keys that change how fast a run goes but not what it computes never enter the hash.
LATE_KEYS = (("data", "train_subset", None), ("trainer", "steps", None), ("trainer", "compile_mode", "default"))
SPEED_KEYS = (("data", "workers"), ("data", "index_dir"))


def config_hash(cfg: DictConfig) -> str:
    identity = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in NON_IDENTITY_KEYS}
    for group, key, default in LATE_KEYS:
        if isinstance(identity.get(group), dict) and key in identity[group]:
            value = identity[group].pop(key)
            if value != default:
                identity[group][key] = value
    for group, key in SPEED_KEYS:
        if isinstance(identity.get(group), dict):
            identity[group].pop(key, None)
    return hashlib.sha1(OmegaConf.to_yaml(OmegaConf.create(identity)).encode()).hexdigest()[:8]


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
