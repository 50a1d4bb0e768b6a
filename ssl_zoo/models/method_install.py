"""Why a method named on the command line is not there although the user wrote it.

A method is two files: methods/<name>.py (imported as ssl_zoo.methods.<name>) and conf/method/<name>.yaml. A plain
`pip install .` copies methods/ and conf/ into site-packages as they were, so a method added to the checkout
afterwards is not seen, or only half (one file added where the package reads it); `pip install -e .` makes the
package read the checkout's files as they are.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ssl_zoo.common.paths import conf_dir

EDITABLE = "a new method needs `pip install -e .` (a plain `pip install .` copies methods/ and conf/ as they were)"


def _module_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(f"ssl_zoo.methods.{name}") is not None
    except (ImportError, ValueError):
        return False


def install_hint(name: str) -> str:
    """'' when no file of method `name` exists (a typo: the choices say enough); otherwise '; ' and which of its
    two files the package sees, which not, and the install it needs."""
    if not name.isidentifier():
        return ""
    files = {f"methods/{name}.py": _module_installed(name),
             f"conf/method/{name}.yaml": (conf_dir() / "method" / f"{name}.yaml").is_file()}
    installed = [f for f, seen in files.items() if seen]
    if len(installed) == 1:
        missing = next(f for f in files if f not in installed)
        return f"; {installed[0]} is installed but not {missing}: {EDITABLE}"
    here = [f for f in files if Path(f).is_file()]  # relative to the working directory: a checkout, if it is one
    if not installed and here:
        return f"; {' and '.join(here)} {'is' if len(here) == 1 else 'are'} here but not installed: {EDITABLE}"
    return ""
