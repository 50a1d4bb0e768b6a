"""Paths: a user path made absolute, and where the shipped configs live."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def absolute(path: str | Path) -> Path:
    """A user path made absolute against the working directory now (~ expanded; symlinks kept)."""
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def conf_dir() -> Path:
    return Path(str(resources.files("ssl_zoo.conf")))
