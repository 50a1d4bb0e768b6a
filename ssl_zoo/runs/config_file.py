"""config.yaml, the resolved config of a run: its one writer and its readers."""

from __future__ import annotations

import io
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from ssl_zoo.runs.atomic import atomic_write_text
from ssl_zoo.runs.file_checks import config_problem
from ssl_zoo.runs.layout import CONFIG
from ssl_zoo.runs.reading import read_text, text_or_problem


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    atomic_write_text(run_dir / CONFIG, OmegaConf.to_yaml(cfg))


def has_config(run_dir: Path) -> bool:
    return (run_dir / CONFIG).exists()


def _parse(text: str) -> DictConfig | ListConfig:
    return OmegaConf.load(io.StringIO(text))  # what OmegaConf.load(path) makes of it, errors included


def unchecked_config(run_dir: Path) -> DictConfig | ListConfig:
    """config.yaml as YAML, not held against anything: to compare with a config (its hash) or to show a
    value of it. Raises OSError (missing, unreadable), ValueError (binary, far too large) or the YAML error."""
    return _parse(read_text(run_dir / CONFIG))


def config_or_problem(run_dir: Path) -> tuple[DictConfig | None, str | None]:
    """config.yaml as a DictConfig with the keys every verb needs to place the run (file_checks.config_problem)."""
    path = Path(run_dir) / CONFIG
    text, problem = text_or_problem(path)
    if text is None:
        return None, problem
    try:
        cfg = _parse(text)
    except Exception as err:  # YAML syntax, duplicate keys, a scalar document: all "not a config"
        return None, f"{path}: not readable YAML ({type(err).__name__})"
    problem = config_problem(cfg)
    return (None, f"{path}: {problem}") if problem else (cfg, None)
