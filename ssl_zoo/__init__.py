"""ssl-zoo: comparative self-supervised learning under one trainer."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# Installed, ssl_zoo.methods / .analysis / .conf are folders of this package (pyproject's package-dir). In the
# source tree they are the repository's top-level methods/, analysis/ and conf/: when this package is imported
# from a checkout (python -m pytest, a notebook or a SLURM task started at the repository root, where ./ssl_zoo
# shadows the installed package), its subpackages are also looked up in the repository root.
_here = _Path(__file__).resolve().parent
if not (_here / "methods").is_dir() and (_here.parent / "methods" / "__init__.py").is_file() \
        and (_here.parent / "pyproject.toml").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 (a package's __path__)

# The Python API (ssl_zoo.api, docs/python_api.md) at the top level: ssl_zoo.build("byol", ...), ssl_zoo.train(...),
# imported on first use so `ssl-zoo --help` does not pay for torch. api.config and api.export stay in ssl_zoo.api:
# ssl_zoo.config and ssl_zoo.export are modules.
_API = ("build", "wrap", "load_data", "view_maker", "optimizer", "train", "results", "load_run", "load_backbone",
        "evaluate", "features")


def __getattr__(name: str):
    if name in _API:
        from ssl_zoo import api

        return getattr(api, name)
    raise AttributeError(f"module 'ssl_zoo' has no attribute {name!r}")
