"""How `eval`, `compare`, `report` and `status` take the run or sweep folder: a positional path, or run_dir=<path>
(the older spelling; sweep_dir= too). Everything else stays an override."""

from __future__ import annotations

from ssl_zoo.common.errors import UserError

PATH_KEYS = ("run_dir", "sweep_dir")


def split_folders(tokens: list[str]) -> tuple[list[str], list[str]]:
    """(the folders named, the key=value overrides)."""
    folders, overrides = [], []
    for token in tokens:
        key, eq, value = token.partition("=")
        if not eq:
            folders.append(token)
        elif key in PATH_KEYS:
            if not value:
                raise UserError(f"{key}= needs a path")
            folders.append(value)
        else:
            overrides.append(token)
    return folders, overrides


def one_folder(tokens: list[str], verb: str, what: str) -> tuple[str, list[str]]:
    """The one folder a verb works on, and the remaining overrides."""
    folders, overrides = split_folders(tokens)
    if len(folders) != 1:
        raise UserError(f"ssl-zoo {verb} needs one {what} (a path, or run_dir=<path>); got {len(folders)}")
    return folders[0], overrides
