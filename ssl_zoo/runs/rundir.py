"""The run directory at a start: whether it can be written, and how a second start of the same run is treated.

A second start of the same command resumes an unfinished run and refuses a finished (or diverged) one; a
directory holding another config or foreign files is refused. All of it is decided before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_zoo.common.errors import UserError
from ssl_zoo.data.datasets import check_data_root
from ssl_zoo.runs.config_file import unchecked_config
from ssl_zoo.runs.identity import NON_IDENTITY_KEYS, config_hash
from ssl_zoo.runs.layout import CHECKPOINTS, CONFIG, LOCK, RESULTS
from ssl_zoo.runs.results_file import results_or_problem


def _leftover(path: Path) -> bool:
    """A temp file of an atomic write that a kill interrupted (see ssl_zoo.runs.atomic), or the lock
    file of a start killed before it wrote config.yaml (ssl_zoo.runs.runlock)."""
    temp = path.name.startswith(".") and path.name.endswith(".tmp")
    return path.is_file() and (temp or path.name == LOCK)


def check_out_dir(run_dir: Path) -> None:
    """The run directory can be created (or written, when it exists): checked before training starts."""
    probe = run_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create {run_dir}: {probe} is a file; set out_dir= to a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {probe} (permission denied or read-only); set out_dir= to a writable folder")
    for sub in (run_dir / CHECKPOINTS,):
        if sub.exists() and not (sub.is_dir() and os.access(sub, os.W_OK | os.X_OK)):
            raise UserError(f"cannot write to {sub}; fix its permissions or set out_dir= elsewhere")


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out: dict = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _differences(saved: DictConfig, cfg: DictConfig) -> str:
    a, b = (_flat({k: v for k, v in OmegaConf.to_container(c, resolve=True).items() if k not in NON_IDENTITY_KEYS})
            for c in (saved, cfg))
    diff = [f"{k}: {a.get(k, '(none)')} there, {b.get(k, '(none)')} now" for k in sorted(set(a) | set(b))
            if a.get(k, "(none)") != b.get(k, "(none)")]
    more = f" and {len(diff) - 2} more" if len(diff) > 2 else ""
    return ", ".join(diff[:2]) + more


def check_existing(run_dir: Path, cfg: DictConfig) -> bool:
    """True when an unfinished run of the same config is there to resume; False for a fresh start.

    Raises UserError for everything else (nothing is written either way): an unwritable out_dir, a missing data
    folder, a directory of another config or of foreign files, a finished or diverged run, resume=never.
    """
    check_out_dir(run_dir)
    check_data_root(cfg)
    if not run_dir.exists():
        return False
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} exists and is not a directory; choose another out_dir/run_name")
    saved = run_dir / CONFIG
    if not saved.exists():
        if all(_leftover(p) for p in run_dir.iterdir()):  # empty, or killed before config.yaml was whole
            return False
        raise UserError(f"{run_dir} exists and is not an ssl-zoo run directory; choose another out_dir/run_name")
    try:
        saved_cfg = unchecked_config(run_dir)
        same = config_hash(saved_cfg) == config_hash(cfg)
    except (OSError, yaml.YAMLError, OmegaConfBaseException, ValueError, AttributeError) as err:
        raise UserError(f"{saved} is unreadable ({type(err).__name__}); restore it or choose another run_name") from err
    if not same:
        raise UserError(f"{run_dir} holds a run with a different config ({_differences(saved_cfg, cfg)}); "
                        "use another run_name or out_dir, or the config it was started with")
    if (run_dir / RESULTS).exists():
        results, problem = results_or_problem(run_dir)
        if results is None:
            raise UserError(f"{problem or run_dir / RESULTS}: unreadable; move it away to evaluate the run again")
        if results.get("status") == "finished":
            raise UserError(f"{run_dir} is already finished (results.json); it is never overwritten — "
                            "pick another run_name or seed")
        if results.get("status") == "diverged":
            raise UserError(f"{run_dir} diverged ({results.get('error', 'non-finite loss')}) and would again; "
                            "lower trainer.lr or set trainer.grad_clip (a new run), or delete the directory")
    if cfg.resume == "never":
        raise UserError(f"{run_dir} exists and resume=never; remove it or use resume=auto")
    return True
