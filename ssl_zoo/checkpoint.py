"""Checkpoints and run files written whole or not at all: temp file, fsync, rename; the previous kept."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import torch


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """checkpoints/last.pt; the one it replaces becomes prev.pt, so a bad last.pt never loses the run."""
    buf = io.BytesIO()
    torch.save(state, buf)
    folder = run_dir / "checkpoints"
    last = folder / "last.pt"
    if last.exists():
        os.replace(last, folder / "prev.pt")
    atomic_write_bytes(last, buf.getvalue())


def load_checkpoint(run_dir: Path) -> dict | None:
    """The newest whole checkpoint (weights_only: no pickled code runs), or None when there is none."""
    folder = run_dir / "checkpoints"
    for name in ("last.pt", "prev.pt"):
        path = folder / name
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or corrupt: fall back to the previous one
            warnings.warn(f"checkpoint {path} is unreadable ({type(err).__name__}); trying the previous one",
                          stacklevel=2)
    return None
