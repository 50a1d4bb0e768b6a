"""The run directory: what a run writes and how a second start of the same run is treated.

A second start of the same command resumes an unfinished run and refuses a finished (or diverged) one; a
directory holding another config or foreign files is refused. All of it is decided before anything is written.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_zoo.runs import runfiles
from ssl_zoo.runs.checkpoint import atomic_write_text
from ssl_zoo.data.datasets import check_data_root
from ssl_zoo.runs.identity import NON_IDENTITY_KEYS, config_hash
from ssl_zoo.common.errors import UserError
from ssl_zoo.runs.runlock import LOCK_NAME


def read_results(run_dir: Path) -> dict | None:
    """results.json as a dict; None when it is missing or is not what ssl-zoo writes there (one reader for every
    verb: runfiles.read_results, which says why)."""
    return runfiles.read_results(run_dir)[0]


def checkpoint_stamp(run_dir: Path) -> tuple:
    """Identity of the checkpoint files (inode, size, mtime): a start compares it before and after it takes the
    run's lock to know whether another process wrote one in between."""
    stamp = []
    for name in ("last.pt", "prev.pt"):
        try:
            st = (run_dir / "checkpoints" / name).stat()
        except OSError:
            continue
        stamp.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


def _leftover(path: Path) -> bool:
    """A temp file of an atomic write that a kill interrupted (see checkpoint.atomic_write_bytes), or the lock
    file of a start killed before it wrote config.yaml (ssl_zoo.runs.runlock)."""
    temp = path.name.startswith(".") and path.name.endswith(".tmp")
    return path.is_file() and (temp or path.name == LOCK_NAME)


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
    for sub in (run_dir / "checkpoints",):
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
    saved = run_dir / "config.yaml"
    if not saved.exists():
        if all(_leftover(p) for p in run_dir.iterdir()):  # empty, or killed before config.yaml was whole
            return False
        raise UserError(f"{run_dir} exists and is not an ssl-zoo run directory; choose another out_dir/run_name")
    try:
        saved_cfg = OmegaConf.load(saved)
        same = config_hash(saved_cfg) == config_hash(cfg)
    except (OSError, yaml.YAMLError, OmegaConfBaseException, ValueError, AttributeError) as err:
        raise UserError(f"{saved} is unreadable ({type(err).__name__}); restore it or choose another run_name") from err
    if not same:
        raise UserError(f"{run_dir} holds a run with a different config ({_differences(saved_cfg, cfg)}); "
                        "use another run_name or out_dir, or the config it was started with")
    if (run_dir / "results.json").exists():
        results, problem = runfiles.read_results(run_dir)
        if results is None:
            raise UserError(f"{problem or run_dir / 'results.json'}: unreadable; move it away to evaluate the run again")
        if results.get("status") == "finished":
            raise UserError(f"{run_dir} is already finished (results.json); it is never overwritten — "
                            "pick another run_name or seed")
        if results.get("status") == "diverged":
            raise UserError(f"{run_dir} diverged ({results.get('error', 'non-finite loss')}) and would again; "
                            "lower trainer.lr or set trainer.grad_clip (a new run), or delete the directory")
    if cfg.resume == "never":
        raise UserError(f"{run_dir} exists and resume=never; remove it or use resume=auto")
    return True


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """metrics.csv rewritten whole from the rows the checkpoint carries, so a resumed run never repeats one
    (and a run resumed from before its first epoch end has none)."""
    path = run_dir / "metrics.csv"
    if not rows:
        path.unlink(missing_ok=True)
        return
    fields = list(rows[0])
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
