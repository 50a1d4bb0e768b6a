"""Files written whole or not at all.

A file is written under a temp name, fsync'd, renamed over the old one, and the folder fsync'd, so a kill
or crash at any moment leaves either the old file or the new one. A failed write (disk full, read-only, a folder
in the way) is one line naming the file, and leaves no temp file behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ssl_zoo.common.errors import UserError


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


def write_temp(path: Path, write: Callable[[BinaryIO], None]) -> Path:
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
    tmp = write_temp(path, lambda f: f.write(data))
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
