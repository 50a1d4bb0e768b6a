"""Checkpoints (<run>/checkpoints/last.pt, prev.pt) written whole or not at all, and read back only when whole.

A checkpoint is written like every run file (ssl_zoo.runs.atomic) and keeps one generation more: the new
checkpoint is whole on disk before the old last.pt becomes prev.pt (a hard link, so last.pt never goes
missing), and a checkpoint is loaded only after its zip CRCs check out and `torch.load(weights_only=True)`
(no pickled code runs) accepts it; a bad last.pt falls back to prev.pt with one warning line.
"""

from __future__ import annotations

import io
import os
import sys
import zipfile
from pathlib import Path

import torch

from ssl_zoo.common.errors import UserError
from ssl_zoo.runs import atomic
from ssl_zoo.runs.layout import CHECKPOINTS, LAST, PREVIOUS

# What makes a torch file an ssl-zoo checkpoint (evaluation and export read these), with each value's type.
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {"method": dict, "optimizer": dict, "step": int}
# What resuming training reads on top (Trainer.state writes them all).
RESUME_KEYS: dict[str, type | tuple[type, ...]] = {"probe": dict, "probe_opt": dict, "rows": list,
                                                   "elapsed": (int, float), "sums": dict}


def save_checkpoint(run_dir: Path, state: dict, keep_previous: bool = True) -> None:
    """checkpoints/last.pt; the one it replaces becomes prev.pt once the new one is whole on disk.

    keep_previous=False replaces last.pt without touching prev.pt: used after resuming from prev.pt because
    last.pt was unreadable (rotating that bad file into prev.pt would throw the good one away).
    """
    folder = run_dir / CHECKPOINTS
    last, prev = folder / LAST, folder / PREVIOUS
    tmp = atomic.write_temp(last, lambda f: torch.save(state, f))
    if keep_previous and last.exists():
        link = folder / ".prev.pt.tmp"
        link.unlink(missing_ok=True)  # left by a kill between the two steps below
        try:
            os.link(last, link)  # prev.pt becomes the old last.pt while last.pt stays in place
            os.replace(link, prev)
        except OSError:  # a file system without hard links: a short window with only prev.pt (load handles it)
            os.replace(last, prev)
    os.replace(tmp, last)
    atomic.fsync_dir(folder)


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
    folder = run_dir / CHECKPOINTS
    problems: dict[str, str] = {}
    for name in (LAST, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            state = read_checkpoint(path, keys)
        except Exception as err:  # truncated, corrupt, not a checkpoint, pickled code: all mean "not usable"
            problems[name] = _reason(err)
            continue
        if problems:
            print(f"ssl-zoo: warning: {folder / LAST} is unreadable ({problems[LAST]}); resuming from "
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


def files_stamp(run_dir: Path, names) -> tuple:
    """Identity of some files of a run (inode, size, mtime; missing ones left out): a verb compares it before and
    after it takes the run's lock to know whether another process wrote one in between."""
    stamp = []
    for name in names:
        try:
            st = (run_dir / name).stat()
        except OSError:
            continue
        stamp.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


def checkpoint_stamp(run_dir: Path) -> tuple:
    """files_stamp of the checkpoint files."""
    return files_stamp(run_dir, (f"{CHECKPOINTS}/{LAST}", f"{CHECKPOINTS}/{PREVIOUS}"))
