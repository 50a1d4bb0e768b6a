"""Composing a config with Hydra's compose API over the shipped conf/; every Hydra and OmegaConf failure on the
way (syntax, interpolations, a node set to a scalar, an unknown key or group option) as one line naming the
override."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf import errors as oc_errors
from omegaconf.errors import OmegaConfBaseException

from ssl_zoo.common.errors import UserError
from ssl_zoo.common.paths import conf_dir
from ssl_zoo.common.shown import shown
from ssl_zoo.models.method_install import install_hint

GROUPS = ("method", "data", "encoder", "views", "ablation", "launcher", "experiment")


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
        k = override_key(o)
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
                or not _knownoverride_key(key):
            return unknownoverride_key(key)
        cause = [ln.strip() for ln in text.splitlines()[1:] if ln.strip() and not ln.strip().startswith(
            ("To append", "Key", "full_key", "object_type", "reference_type"))]
        typed = _override_at(key, overrides) or key
        return f"'{typed}' cannot be applied: {cause[0] if cause else _first_line(err)}"
    return None


def _knownoverride_key(key: str) -> bool:
    return key in _all_keys(shipped_defaults(())) or any(k.startswith(key + ".") for k in _all_keys(
        shipped_defaults(())))


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
    known = _all_keys(shipped_defaults(()))
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
    if not close:
        last = difflib.get_close_matches(key.rsplit(".", 1)[-1], [k.rsplit(".", 1)[-1] for k in known], cutoff=0.8)
        close = [k for k in known if k.rsplit(".", 1)[-1] in last]
    return close[:3]


def unknownoverride_key(key: str) -> str:
    """The one-line error for a key the config lacks, with the closest existing keys."""
    if _knownoverride_key(key):  # a key of another option of its group (method.projector with method=dino)
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
        key = override_key(o)
        if key in GROUPS and "=" in o:
            value = o.split("=", 1)[1]
            if value in ("null", "") and key in ("views", "experiment"):  # null: the default (none / the method's)
                continue
            if "," not in value and value not in choices(key):  # a,b lists are sweeps: expanded before this
                hint = install_hint(value) if key == "method" else ""  # a method written but not installed
                raise UserError(f"unknown {key} '{value}'; choices: {', '.join(choices(key))}{hint}")


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("~+")


def compose_config(overrides: list[str]) -> DictConfig:
    _check_groups(overrides)
    with config_errors(overrides), initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        try:
            if not any(override_key(o) == "views" for o in overrides):  # the method's own recipe unless the user picked one
                # composed without views.* overrides first: they need the views group that this picks
                method = compose("config", overrides=[o for o in overrides if not override_key(o).startswith("views.")])
                views = method.method.get("default_views")
                if not isinstance(views, str) or views not in choices("views"):
                    raise UserError(f"method.default_views={shown(views)} is not a views option; choices: "
                                    f"{', '.join(choices('views'))}")
                overrides = [*overrides, f"views={views}"]
            return compose("config", overrides=overrides)
        except ValueError as err:  # composing runs no code of the user's: any failure is the overrides'
            if isinstance(err, OmegaConfBaseException):
                raise  # config_errors says it better
            raise UserError(explain(err, overrides)) from err


@functools.lru_cache(maxsize=64)
def shipped_defaults(groups: tuple[str, ...]) -> DictConfig:
    """The config the chosen groups ship with, before the user's key overrides (read-only; cached)."""
    return compose_config(list(groups))
