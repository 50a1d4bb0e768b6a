"""What a read-only verb (compare, report) writes into: its output folder, checked before the runs are read and
made once everything to write is known; and the lines naming the files it left out."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ssl_zoo.common.errors import UserError


def check_output_folder(folder: Path, what: str) -> Path:
    """The folder a verb will write into can be made there: no file on its path, and the nearest existing
    folder writable. Cheap and writes nothing: verbs call it before reading the runs."""
    folder = Path(folder).expanduser()
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {folder}: {probe} is a file, not a folder; choose another {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {what} {folder} (read-only or permission denied); choose another {what}")
    return folder


def output_folder(folder: Path, what: str) -> Path:
    """The folder a verb writes into, created (with its parents) or refused in one line: a path under a file,
    a read-only file system, no permission. Call it once everything to write is known, before writing."""
    folder = check_output_folder(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {what} {folder}: {err.strerror or err}; choose another {what}") from err
    return check_output_folder(folder, what)


def warn_skipped(reasons: list[str]) -> None:
    """One stderr line per file a read-only verb left out, so nothing is dropped silently."""
    for reason in reasons:
        print(f"ssl-zoo: skipped {reason}", file=sys.stderr, flush=True)
