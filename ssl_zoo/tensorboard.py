"""Optional TensorBoard event files (logger=tensorboard), written next to metrics.csv from the same rows."""

from __future__ import annotations

from pathlib import Path

from ssl_zoo.errors import UserError


class TensorBoardLog:
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise UserError("logger=tensorboard needs the tensorboard package: pip install 'ssl-zoo[tensorboard]'") from err
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key not in ("epoch", "step") and isinstance(value, int | float):
                self.writer.add_scalar(key, value, global_step=int(row["epoch"]))
        self.writer.flush()
