"""Optional TensorBoard event files (logger=tensorboard) in <run>/tensorboard, beside metrics.csv; open_tracker
and log_final also serve logger=wandb (ssl_zoo/train/wandb_log.py) with the same numbers.

Per epoch: every scalar of the metrics.csv row (x axis: epoch). Per step (every trainer.log_every steps, when the
trainer reads the loss anyway): step/loss and step/lr (x axis: optimizer step). At the end of training or of
`ssl-zoo eval`: final/* accuracies and the run's hyper-parameters with those accuracies, so TensorBoard's HParams
view compares the runs of a sweep.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssl_zoo.common.errors import UserError

# config keys shown as hyper-parameters (those that exist in the run's config)
HPARAMS = ("method.name", "ablation.name", "data.name", "encoder.name", "seed", "trainer.epochs",
           "trainer.batch_size", "trainer.optimizer", "trainer.lr", "trainer.weight_decay", "method.tau_base",
           "method.temperature", "views.name")
# results.json keys shown as final metrics
FINAL = ("knn_top1", "linear_top1", "linear_top5", "online_probe_acc")


def _writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise UserError("logger=tensorboard needs the tensorboard package: pip install 'ssl-zoo[tensorboard]'") from err
    return SummaryWriter(str(folder))


class TensorBoardLog:
    def __init__(self, run_dir: Path):
        self.writer = _writer(run_dir / "tensorboard")

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key not in ("epoch", "step") and isinstance(value, int | float):
                self.writer.add_scalar(key, value, global_step=int(row["epoch"]))
        self.writer.flush()

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("step/loss", loss, global_step=step)
        self.writer.add_scalar("step/lr", lr, global_step=step)


def final_metrics(results: dict) -> dict[str, float]:
    """final/<key> numbers of an evaluation (fine-tuning as final/finetune_<fraction>)."""
    out = {f"final/{k}": float(results[k]) for k in FINAL if isinstance(results.get(k), int | float)}
    for name, ft in (results.get("finetune") or {}).items():
        if isinstance(ft.get("top1"), int | float):
            out[f"final/finetune_{name.rstrip('%')}pct"] = float(ft["top1"])
    return out


def hparams(cfg: DictConfig) -> dict:
    found = {key: OmegaConf.select(cfg, key, default=None) for key in HPARAMS}
    return {k: v for k, v in found.items() if isinstance(v, int | float | str | bool)}


def open_tracker(cfg: DictConfig, run_dir: Path):
    """The experiment tracker of cfg.logger (tensorboard or wandb): .log(row) per epoch, .log_step(...)."""
    if cfg.logger == "wandb":
        from ssl_zoo.train.wandb_log import WandbLog

        return WandbLog(run_dir, cfg)
    return TensorBoardLog(run_dir)


def log_final(run_dir: Path, cfg: DictConfig, results: dict, step: int) -> None:
    """The final accuracies as scalars and, with the hyper-parameters, as one HParams session (wandb: in the
    run's summary)."""
    metrics = final_metrics(results)
    if not metrics:
        return
    if cfg.logger == "wandb":
        from ssl_zoo.train.wandb_log import log_final as wandb_final

        return wandb_final(run_dir, cfg, metrics)
    writer = _writer(run_dir / "tensorboard")
    for key, value in metrics.items():
        writer.add_scalar(key, value, global_step=step)
    writer.add_hparams(hparams(cfg), metrics, run_name=".", global_step=step)  # ".": the run's own folder
    writer.close()
