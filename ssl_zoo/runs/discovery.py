"""Finding the run directories below folders: any folder holding an ssl-zoo config.yaml."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssl_zoo.common.errors import UserError
from ssl_zoo.runs.config_file import unchecked_config
from ssl_zoo.runs.layout import CHECKPOINTS, CONFIG, METRICS, RESULTS


def check_folders(paths: list[str | Path]) -> None:
    """Every folder to search exists and is a folder (checked first: the quickest mistake to name)."""
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p} does not exist")
        if not p.is_dir():
            raise UserError(f"{p} is a file, not a folder of runs")


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    check_folders(paths)
    found: set[Path] = set()
    for p in map(Path, paths):
        configs = [p / CONFIG] if (p / CONFIG).is_file() else []
        found.update(c.parent for c in [*configs, *p.rglob(CONFIG)] if _is_run_config(c))
    return sorted(found)


def _is_run_config(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        cfg = unchecked_config(path.parent)
        if isinstance(cfg, DictConfig) and OmegaConf.select(cfg, "method.name", default=None) is not None:
            return True
    except Exception:  # unreadable: decided by what sits next to it
        pass
    return any((path.parent / f).exists() for f in (METRICS, RESULTS, CHECKPOINTS))
