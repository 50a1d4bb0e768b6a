"""Composing and checking the config: Hydra's compose API over the shipped conf/, errors as one line.

`load_config` checks everything a config alone can get wrong (unknown groups and keys, types and ranges
against ssl_zoo/schema.py and the shipped yaml, views, encoder names, the method's own rules, run directory
names, the memory the model would need) without touching the file system; `check_data_root` and
rundir.check_existing check paths right before a run starts. Every Hydra and OmegaConf failure on the way
(syntax, interpolations, a node set to a scalar) passes through `config_errors`: one line naming the override.
`check_run_config` holds a run directory's config.yaml, perhaps edited by hand, to the same checks.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf import errors as oc_errors
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


# --- every Hydra / OmegaConf failure as one line -----------------------------------------------------------
INTERPOLATION_HELP = "an interpolation is ${other.key} or ${oc.env:VAR,default}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


def _override_at(key: str | None, overrides: Sequence[str]) -> str | None:
    """The user's override that sets `key` (or a node above it), else one whose value is an interpolation
    naming it; the last one wins, as in Hydra."""
    if not key:
        return None
    for o in reversed(overrides):
        k = _key(o)
        if k == key or key.startswith(k + ".") or k.startswith(key + "."):
            return o
    for o in reversed(overrides):
        if "${" in o and key.rsplit(".", 1)[-1] in o.split("=", 1)[-1]:
            return o
    return None


def _reason(err: BaseException) -> str:
    """What went wrong, in words a user can act on."""
    text = _first_line(err)
    if isinstance(err, RecursionError) or "Recursive interpolation" in text:
        return "the interpolation refers to itself (directly or through other keys); give a value instead"
    if isinstance(err, oc_errors.UnsupportedInterpolationType):
        return f"{text}; the resolvers are oc.env, oc.select, oc.decode, oc.create, oc.deprecated, oc.dict.keys, " \
               "oc.dict.values"
    if isinstance(err, oc_errors.InterpolationKeyError):
        return f"{text} ({INTERPOLATION_HELP})"
    if isinstance(err, oc_errors.InterpolationToMissingValueError):
        return f"{text}: the key it names has no value (???)"
    if isinstance(err, oc_errors.GrammarParseError):
        return f"not a valid interpolation ({text}); {INTERPOLATION_HELP}"
    if "Environment variable" in text:
        var = re.search(r"Environment variable '([^']*)'", text)
        name = var.group(1) if var else "VAR"
        return f"environment variable {name} is not set; set it or give a default: ${{oc.env:{name},<default>}}"
    if isinstance(err, oc_errors.InterpolationResolutionError):
        return text.replace("raised while resolving interpolation", "while resolving the interpolation")
    if isinstance(err, oc_errors.ConfigAttributeError | oc_errors.ConfigKeyError):
        needed = getattr(err, "full_key", None) or text
        return f"this config needs {needed}, which is not there ({text})"
    if isinstance(err, oc_errors.ConfigTypeError) and text.startswith("Cannot merge"):
        return f"{text.replace('Cannot merge', 'cannot replace a')}: a node and a list (or value) do not replace " \
               "each other; set the keys inside it"
    return text


def _hydra_line(err: BaseException, overrides: Sequence[str]) -> str | None:
    """Hydra's composition errors that name their own culprit: unknown group options, unknown keys, sweeps."""
    text = str(err)
    missing = re.search(r"Could not find '(\w+)/([^']*)'", text)
    if missing:
        group, option = missing.groups()
        return f"unknown {group} '{option}'; choices: {', '.join(choices(group))}"
    ambiguous = re.search(r"Ambiguous value for argument '([^']*)'", text)
    if ambiguous:
        return sweep_in_one_run(ambiguous.group(1))
    merging = re.search(r"Error merging override (.+)", text)
    if merging and err.__cause__ is not None:
        return f"'{merging.group(1)}': {_reason(err.__cause__)}"
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        key = override.group(1)
        if re.search(r"Key '[^']*' is not in struct|Key '[^']*' not in|To append to your config", text) \
                or not _known_key(key):
            return unknown_key(key)
        cause = [ln.strip() for ln in text.splitlines()[1:] if ln.strip() and not ln.strip().startswith(
            ("To append", "Key", "full_key", "object_type", "reference_type"))]
        typed = _override_at(key, overrides) or key
        return f"'{typed}' cannot be applied: {cause[0] if cause else _first_line(err)}"
    return None


def _known_key(key: str) -> bool:
    return key in _all_keys(_shipped_defaults(())) or any(k.startswith(key + ".") for k in _all_keys(
        _shipped_defaults(())))


def sweep_in_one_run(override: str) -> str:
    return (f"'{override}' is a sweep, one run per value: run it with `ssl-zoo train -m` (for a list write "
            "key=[a,b]; for a string with a comma, quote it: key='a,b')")


def explain(err: BaseException, overrides: Sequence[str] = ()) -> str:
    """One line for a Hydra or OmegaConf failure: the override it comes from (or the key) and why."""
    if isinstance(err, HydraException | OmegaConfBaseException):
        line = _hydra_line(err, overrides)
        if line:
            return line
    key = getattr(err, "full_key", None) or None
    typed = _override_at(key, overrides)
    subject = repr(typed) if typed else key
    if subject is None:  # no key to go by (a cycle through several keys): the interpolating overrides
        subject = " ".join(repr(o) for o in overrides if "${" in o) or "the config"
    return f"{subject}: {_reason(err)}"


@contextmanager
def config_errors(overrides: Sequence[str] = ()) -> Iterator[None]:
    """Hydra, OmegaConf and runaway-interpolation failures inside become one UserError line."""
    try:
        yield
    except (HydraException, OmegaConfBaseException, RecursionError) as err:
        raise UserError(explain(err, overrides)) from err


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
    if _known_key(key):  # a key of another option of its group (method.projector with method=dino)
        return (f"unknown config key '{key}': the {key.split('.')[0]} chosen has none (`ssl-zoo show` with the same "
                "groups prints its keys)")
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
    with config_errors(overrides), initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        try:
            if not any(_key(o) == "views" for o in overrides):  # the method's own recipe unless the user picked one
                # composed without views.* overrides first: they need the views group that this picks
                method = compose("config", overrides=[o for o in overrides if not _key(o).startswith("views.")])
                views = method.method.get("default_views")
                if not isinstance(views, str) or views not in choices("views"):
                    raise UserError(f"method.default_views={schema._shown(views)} is not a views option; choices: "
                                    f"{', '.join(choices('views'))}")
                overrides = [*overrides, f"views={views}"]
            return compose("config", overrides=overrides)
        except ValueError as err:  # composing runs no code of the user's: any failure is the overrides'
            if isinstance(err, OmegaConfBaseException):
                raise  # config_errors says it better
            raise UserError(explain(err, overrides)) from err


@functools.lru_cache(maxsize=64)
def _shipped_defaults(groups: tuple[str, ...]) -> DictConfig:
    """The config the chosen groups ship with, before the user's key overrides (read-only; cached)."""
    return _compose(list(groups))


def _check_types(cfg, defaults, path: str = "") -> None:
    """Values keep the type of the shipped default (an int stays an int, a node stays a node, a list a list;
    null defaults accept anything)."""
    key = path[:-1]
    if defaults is None or (cfg is None and not isinstance(defaults, DictConfig)):
        return
    if isinstance(defaults, DictConfig):
        if not isinstance(cfg, DictConfig):
            some = ", ".join(f"{key}.{k}" for k in list(defaults)[:2])
            raise UserError(f"{key}={schema._shown(cfg)} replaces a config node with a value; set its keys instead "
                            f"(e.g. {some}), or pick an option of a group with group=name")
        for k in defaults:
            if k in cfg and not OmegaConf.is_missing(defaults, k) and not OmegaConf.is_missing(cfg, k):
                _check_types(cfg[k], defaults[k], f"{path}{k}.")
        return
    if isinstance(defaults, ListConfig):
        if not isinstance(cfg, ListConfig):
            raise UserError(f"{key}={schema._shown(cfg)} has the wrong type; set {key} to a list like "
                            f"{schema._shown(defaults)}")
        return
    if isinstance(cfg, DictConfig | ListConfig):
        raise UserError(f"{key}={schema._shown(cfg)} has the wrong type; set {key} to "
                        f"{schema.describe(type(defaults), {})}")
    if schema.declared(key) is not None:  # typed by the schema (check() below), unions included: bool | "auto"
        return
    want = type(defaults)
    ok = isinstance(cfg, want) or (want is float and isinstance(cfg, int) and not isinstance(cfg, bool))
    if want is int and isinstance(cfg, bool):
        ok = False
    if not ok:
        raise UserError(f"{key}={schema._shown(cfg)} has the wrong type; set {key} to {schema.describe(want, {})}")


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
    workers, most = d.get("workers"), max(256, 8 * (os.cpu_count() or 1))
    if isinstance(workers, int) and workers > most:  # each one a process: this many would bring a machine down
        raise UserError(f"data.workers={workers} DataLoader processes is more than any machine runs; at most "
                        f"{most} (this machine has {os.cpu_count()} cores)")


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
    from ssl_zoo.encoders import pretrained_problem  # late: imports torch

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


def _check_syntax(overrides: list[str]) -> None:
    """Each override read by Hydra's own parser: syntax errors, sweeps without -m and added keys, one line each."""
    from ssl_zoo.sweep import parse  # late: sweep imports this module (GROUPS, choices)

    for override, text in zip(parse(overrides), overrides):
        if not override.key_or_group.strip():
            raise UserError(f"'{text}' has no key before the '='; overrides are key=value")
        if override.is_sweep_override():
            raise UserError(sweep_in_one_run(text))
        if override.is_add() or override.is_force_add():
            raise UserError(f"'{text}' adds a key the config does not have; only existing keys can be set")


def load_config(overrides: list[str]) -> DictConfig:
    """The resolved, checked config for a list of Hydra overrides."""
    overrides = list(overrides)
    _check_syntax(overrides)
    cfg = _compose(overrides)
    with config_errors(overrides):
        OmegaConf.resolve(cfg)  # every interpolation now: a failing one names its override, not a later check
        if isinstance(cfg.get("resume"), bool):  # resume=true / resume=false: the natural spellings of auto / never
            cfg.resume = "auto" if cfg.resume else "never"
        groups = [o for o in overrides if _key(o) in GROUPS]
        _check_config(cfg, _shipped_defaults(tuple(groups)))
        cfg.out_dir = str(absolute(str(cfg.out_dir)))  # one run directory, whatever the working directory is later
        check_paths(cfg)
    return cfg


def _check_config(cfg: DictConfig, defaults: DictConfig) -> None:
    """Everything a composed (or saved) config can get wrong, first to last: what the method means, types,
    ranges, the parts, optional packages and devices, and whether any machine could hold the model."""
    from ssl_zoo import footprint  # late: these import torch
    from ssl_zoo.finetune import check_data
    from ssl_zoo.streaming.gpu_decode import check_decode

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


def _name_problem(name: str) -> str | None:
    """Why `name` cannot be one folder name (None when it can)."""
    if name in ("", ".", ".."):
        return "is not a folder name"
    if "/" in name:
        return "has a '/'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "has a control character (NUL, newline, ...)"
    return None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to even look up
        return False


def _limit(path: Path, name: str, default: int) -> int:
    """os.pathconf of the deepest existing folder above `path` (file systems differ: 255 bytes is common)."""
    probe = path
    while not _exists(probe) and probe.parent != probe:
        probe = probe.parent
    try:
        return int(os.pathconf(probe, name))
    except (OSError, ValueError):
        return default


RUN_FILE_RESERVE = 64  # bytes for the paths of the files a run writes inside its directory
PATH_KEYS = ("out_dir", "data.root", "data.index_dir")


def check_paths(cfg: DictConfig) -> None:
    """run_name is one folder name inside out_dir, and the run directory's path fits the file system: refused
    here rather than by the first file a run would write."""
    if cfg.run_name is not None:
        problem = _name_problem(str(cfg.run_name))
        if problem:
            raise UserError(f"run_name={str(cfg.run_name)!r} {problem}: run_name is one folder name inside out_dir "
                            "(use out_dir= to move runs)")
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str) and "\0" in value:
            raise UserError(f"{key}={value!r} has a NUL character, which no path can hold; give a folder path")
    run_dir = run_dir_for(cfg)
    name_max = _limit(run_dir, "PC_NAME_MAX", 255)
    for part in run_dir.parts:
        if len(part.encode()) > name_max:
            key = "run_name" if cfg.run_name is not None and part == str(cfg.run_name) else "out_dir"
            raise UserError(f"'{part[:40]}...' is {len(part.encode())} bytes long; the file system takes folder "
                            f"names up to {name_max} bytes: shorten {key}")
    path_max = _limit(run_dir, "PC_PATH_MAX", 4096)
    if len(str(run_dir).encode()) + RUN_FILE_RESERVE > path_max:
        raise UserError(f"the run directory {str(run_dir)[:60]}... is {len(str(run_dir).encode())} bytes long; the "
                        f"paths of its files would pass the file system's {path_max}: shorten out_dir or run_name")


def check_run_config(cfg, path: Path) -> None:
    """A run directory's config.yaml (perhaps edited by hand since) held to load_config's checks, so that
    `ssl-zoo eval` / `export` refuse it in one line naming the file instead of failing deep inside. Keys the
    run predates take their shipped defaults (an older run stays readable)."""
    try:
        with config_errors():
            if not isinstance(cfg, DictConfig):
                raise UserError(f"it holds {type(cfg).__name__}, not a config")
            groups = []
            for group in ("method", "data", "encoder", "views", "ablation", "launcher"):
                node = cfg.get(group)
                name = node.get("name") if isinstance(node, DictConfig) else None
                if isinstance(name, str) and name in choices(group):
                    groups.append(f"{group}={name}")
                elif group not in ("views", "launcher"):  # those two: the method's recipe / local by default
                    raise UserError(f"{group}.name={schema._shown(name)} is not a {group} ssl-zoo ships; choices: "
                                    f"{', '.join(choices(group))}")
            shipped = _shipped_defaults(tuple(groups))
            merged = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(shipped)), cfg)
            OmegaConf.resolve(merged)
            _check_config(merged, shipped)
    except UserError as err:
        raise UserError(f"{path}: {err} (was the file edited? put back the value the run was made with)") from err


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
LATE_KEYS = (("data", "train_subset", None), ("trainer", "steps", None), ("trainer", "compile_mode", "default"),
             ("data", "decode", "cpu"))
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
