"""The text of a run file, read with the limits every reader shares.

Run directories are edited by hand, copied half-way, written by older versions or damaged, and the read-only
verbs (eval, export, compare, report, status) must never crash on them. The readers in ssl_zoo.runs return
`(value, None)` for a usable file, `(None, None)` for an absent one and `(None, reason)` for one that is there but
unusable, the reason naming the file and what is wrong with it in a few words, so a verb can skip the run and say
why in one line.
"""

from __future__ import annotations

from pathlib import Path

from ssl_zoo.runs.layout import MAX_BYTES


class TooLarge(ValueError):
    """A file far larger than any run file: it is not read into memory."""


def read_text(path: Path) -> str:
    """The file's text; raises OSError (missing, a folder, unreadable), UnicodeDecodeError (binary) or TooLarge."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise TooLarge(f"{size} bytes, far larger than a run file")
    return path.read_text(encoding="utf-8")


def text_or_problem(path: Path) -> tuple[str | None, str | None]:
    """(text, None), (None, None) when absent, (None, reason) when unreadable."""
    try:
        if not path.exists():
            return None, None
        if not path.is_file():
            return None, f"{path}: not a file"
        return read_text(path), None
    except TooLarge as err:
        return None, f"{path}: {err}"
    except UnicodeDecodeError:
        return None, f"{path}: binary, not text"
    except OSError as err:
        return None, f"{path}: cannot be read ({err.strerror or err})"
