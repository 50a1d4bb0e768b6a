"""Optional Weights & Biases tracking (logger=wandb; `pip install 'ssl-zoo[wandb]'`).

Offline unless the environment says otherwise: runs are written under <run>/wandb and uploaded later with
`wandb sync <run>/wandb/offline-run-*` (WANDB_MODE=online logs live; WANDB_PROJECT / WANDB_ENTITY as usual).
The wandb run id is derived from the run directory, so a resumed ssl-zoo run continues the same wandb run.
The same numbers as TensorBoard: per-epoch rows, step/loss and step/lr, final/* accuracies in the summary, and
the resolved config.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssl_zoo.common.errors import UserError

MISSING = "logger=wandb needs the wandb package: pip install 'ssl-zoo[wandb]' (or use logger=csv or tensorboard)"


def _wandb():
    try:
        import wandb
    except ImportError as err:
        raise UserError(MISSING) from err
    return wandb


def run_id(run_dir: Path) -> str:
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def _start(run_dir: Path, cfg: DictConfig):
    wandb = _wandb()
    if wandb.run is not None and wandb.run.id == run_id(run_dir):
        return wandb.run
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "ssl-zoo"), name=run_dir.name, id=run_id(run_dir),
                      resume="allow", dir=str(run_dir), mode=os.environ.get("WANDB_MODE", "offline"),
                      config=OmegaConf.to_container(cfg, resolve=True))


class WandbLog:
    def __init__(self, run_dir: Path, cfg: DictConfig):
        self.run = _start(run_dir, cfg)

    def log(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step" and isinstance(v, int | float)},
                     step=int(row["step"]))

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.run.log({"step/loss": loss, "step/lr": lr}, step=step)


def log_final(run_dir: Path, cfg: DictConfig, metrics: dict[str, float]) -> None:
    run = _start(run_dir, cfg)
    run.summary.update(metrics)
    run.finish()
