"""Checkpoints and run files written whole or not at all, and read back only when whole.

A file is written under a temp name, fsync'd, renamed over the old one, and the folder fsync'd, so a kill
or crash at any moment leaves either the old file or the new one. Checkpoints keep one generation more:
the new checkpoint is whole on disk before the old last.pt becomes prev.pt (a hard link, so last.pt never goes
missing), and a checkpoint is loaded only after its zip CRCs check out and `torch.load(weights_only=True)`
(no pickled code runs) accepts it; a bad last.pt falls back to prev.pt with one warning line.
"""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

from ssl_zoo.common.errors import UserError

# What makes a torch file an ssl-zoo checkpoint (evaluation and export read these), with each value's type.
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {"method": dict, "optimizer": dict, "step": int}
# What resuming training reads on top (Trainer.state writes them all).
RESUME_KEYS: dict[str, type | tuple[type, ...]] = {"probe": dict, "probe_opt": dict, "rows": list,
                                                   "elapsed": (int, float), "sums": dict}


def fsync_dir(folder: Path) -> None:
    """Makes renames inside `folder` durable; a no-op where the OS cannot open folders."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(tmp: Path) -> None:
    """Removes a temp file after a failed write. Never raises: on a read-only file system or under a path that
    is a file the unlink fails too, and that second error must not hide the first."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def _cannot_write(path: Path, err: OSError) -> UserError:
    return UserError(f"cannot write {path}: {err.strerror or err} (the previous file is kept); free space or "
                     "fix permissions, then run the same command again")


def _write_temp(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """The content under a temp name next to `path`, fsync'd; a failed write (disk full) leaves nothing."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        _discard(tmp)
        raise _cannot_write(path, err) from err
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = _write_temp(path, lambda f: f.write(data))
    try:
        os.replace(tmp, path)  # fails when path is a folder
    except OSError as err:
        _discard(tmp)
        raise _cannot_write(path, err) from err
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(run_dir: Path, state: dict, keep_previous: bool = True) -> None:
    """checkpoints/last.pt; the one it replaces becomes prev.pt once the new one is whole on disk.

    keep_previous=False replaces last.pt without touching prev.pt: used after resuming from prev.pt because
    last.pt was unreadable (rotating that bad file into prev.pt would throw the good one away).
    """
    folder = run_dir / "checkpoints"
    last, prev = folder / "last.pt", folder / "prev.pt"
    tmp = _write_temp(last, lambda f: torch.save(state, f))
    if keep_previous and last.exists():
        link = folder / ".prev.pt.tmp"
        link.unlink(missing_ok=True)  # left by a kill between the two steps below
        try:
            os.link(last, link)  # prev.pt becomes the old last.pt while last.pt stays in place
            os.replace(link, prev)
        except OSError:  # a file system without hard links: a short window with only prev.pt (load handles it)
            os.replace(last, prev)
    os.replace(tmp, last)
    fsync_dir(folder)


def _reason(err: Exception) -> str:
    text = (str(err).strip().splitlines() or [""])[0][:120]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _check_keys(state: dict, keys: dict[str, type | tuple[type, ...]]) -> None:
    """A checkpoint lacking a key (or holding the wrong kind of value under it) is not usable: say which."""
    for key, kind in keys.items():
        if key not in state:
            raise ValueError(f"no '{key}' entry")
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise ValueError(f"its '{key}' entry is a {type(state[key]).__name__}")


def read_checkpoint(path: Path, keys: dict[str, type | tuple[type, ...]] | None = None) -> dict:
    """One checkpoint file, verified; raises ValueError (or what torch raises) when it is not whole or lacks
    one of REQUIRED_KEYS (and of `keys`)."""
    data = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # torch files are zips: CRCs catch flipped bytes
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"CRC mismatch in {bad}")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"not an ssl-zoo checkpoint (a {type(state).__name__})")
    _check_keys(state, {**REQUIRED_KEYS, **(keys or {})})
    return state


def find_checkpoint(run_dir: Path, keys: dict[str, type | tuple[type, ...]] | None = None
                    ) -> tuple[dict, Path] | None:
    """The newest whole checkpoint and its path, None when there is none; UserError when all are bad. `keys`:
    entries the caller needs beyond REQUIRED_KEYS (RESUME_KEYS to resume training); a file without them is
    passed over like a corrupt one."""
    folder = run_dir / "checkpoints"
    problems: dict[str, str] = {}
    for name in ("last.pt", "prev.pt"):
        path = folder / name
        if not path.exists():
            continue
        try:
            state = read_checkpoint(path, keys)
        except Exception as err:  # truncated, corrupt, not a checkpoint, pickled code: all mean "not usable"
            problems[name] = _reason(err)
            continue
        if problems:
            print(f"ssl-zoo: warning: {folder / 'last.pt'} is unreadable ({problems['last.pt']}); resuming from "
                  f"prev.pt (step {state['step']})", file=sys.stderr, flush=True)
        return state, path
    if problems:
        found = "; ".join(f"{name}: {reason}" for name, reason in problems.items())
        raise UserError(f"no readable checkpoint in {folder} ({found}); delete that folder to restart the run "
                        "from step 0, or put a good last.pt back")
    return None


def load_checkpoint(run_dir: Path) -> dict | None:
    """The newest whole checkpoint of a run directory, or None when there is none."""
    found = find_checkpoint(run_dir)
    return None if found is None else found[0]
