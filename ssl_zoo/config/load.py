"""`load_config`: the resolved, checked config for a list of Hydra overrides, without touching the file system
(paths are checked right before a run starts). `check_run_config` holds a run directory's config.yaml, perhaps
edited by hand, to the same checks."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssl_zoo.common.errors import UserError
from ssl_zoo.common.paths import absolute
from ssl_zoo.common.shown import shown
from ssl_zoo.config.checks import check_config
from ssl_zoo.config.compose import (
    GROUPS,
    choices,
    compose_config,
    config_errors,
    override_key,
    shipped_defaults,
    sweep_in_one_run,
)
from ssl_zoo.config.overrides import parse
from ssl_zoo.config.read_keys import check_overrides_read, chosen_options
from ssl_zoo.config.run_paths import check_paths


def _check_syntax(overrides: list[str]) -> None:
    """Each override read by Hydra's own parser: syntax errors, sweeps without -m and added keys, one line each."""
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
    groups = [o for o in overrides if override_key(o) in GROUPS]
    shipped = shipped_defaults(tuple(groups))  # the chosen options, before any key of theirs is set
    check_overrides_read(overrides, chosen_options(shipped))  # a key the chosen part would ignore: refused
    cfg = compose_config(overrides)
    with config_errors(overrides):
        OmegaConf.resolve(cfg)  # every interpolation now: a failing one names its override, not a later check
        if isinstance(cfg.get("resume"), bool):  # resume=true / resume=false: the natural spellings of auto / never
            cfg.resume = "auto" if cfg.resume else "never"
        check_config(cfg, shipped)
        cfg.out_dir = str(absolute(str(cfg.out_dir)))  # one run directory, whatever the working directory is later
        check_paths(cfg)
    return cfg


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
                    raise UserError(f"{group}.name={shown(name)} is not a {group} ssl-zoo ships; choices: "
                                    f"{', '.join(choices(group))}")
            shipped = shipped_defaults(tuple(groups))
            merged = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(shipped)), cfg)
            OmegaConf.resolve(merged)
            check_config(merged, shipped)
    except UserError as err:
        raise UserError(f"{path}: {err} (was the file edited? put back the value the run was made with)") from err
