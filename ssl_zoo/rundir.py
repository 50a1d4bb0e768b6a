"""The run directory: what a run writes and how a second start of the same run is treated."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssl_zoo.checkpoint import atomic_write_text
from ssl_zoo.config import config_hash
from ssl_zoo.errors import UserError


def read_results(run_dir: Path) -> dict | None:
    path = run_dir / "results.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def check_existing(run_dir: Path, cfg: DictConfig) -> bool:
    """True when an unfinished run of the same config is there to resume. Raises on anything else."""
    if not run_dir.exists():
        return False
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} exists and is not a directory")
    saved = run_dir / "config.yaml"
    if not saved.exists():
        if any(run_dir.iterdir()):
            raise UserError(f"{run_dir} exists and is not an ssl-zoo run directory; choose another out_dir/run_name")
        return False
    if config_hash(OmegaConf.load(saved)) != config_hash(cfg):
        raise UserError(f"{run_dir} holds a run with a different config; use another run_name or out_dir")
    results = read_results(run_dir)
    if results is not None and results.get("status") == "finished":
        raise UserError(f"{run_dir} is already finished (results.json); it is never overwritten — "
                        "pick another run_name or seed")
    if cfg.resume == "never":
        raise UserError(f"{run_dir} exists and resume=never; remove it or use resume=auto")
    return True


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """metrics.csv rewritten whole from the rows the checkpoint carries, so a resumed run never repeats one."""
    if not rows:
        return
    fields = list(rows[0])
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())
