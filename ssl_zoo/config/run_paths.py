"""The run directory's path: run_name is one folder name, and the path fits the file system."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssl_zoo.common.errors import UserError
from ssl_zoo.runs.identity import run_dir_for


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
