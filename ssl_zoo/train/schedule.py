"""How long a run is and its learning rate at each step: steps per epoch from the dataset and the global batch,
the run's length in steps, the warm-up and the peak learning rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ssl_zoo.common.errors import UserError
from ssl_zoo.train.optim import lr_at, peak_lr


def steps_per_epoch(num_images: int, batch_size: int, world: int) -> int:
    """Whole global batches of world x batch_size images in an epoch. The one check of the batch against the
    dataset, made by the trainer and, for every run of a sweep, by the preflight."""
    steps = num_images // (batch_size * world)
    if steps == 0:
        raise UserError(f"trainer.batch_size={batch_size} x {world} process(es) is larger than the "
                        f"{num_images} training images; lower it")
    return steps


def run_length(cfg, steps_per_epoch: int) -> int:
    """Optimizer steps of the run: trainer.steps when set (the last epoch may then be partial), else
    trainer.epochs whole epochs. Every schedule (LR, tau, warm-ups) follows this count."""
    steps = cfg.trainer.get("steps")
    return int(steps) if steps is not None else int(cfg.trainer.epochs) * steps_per_epoch


@dataclass(frozen=True)
class Schedule:
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    min_lr: float

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def epoch_end(self, epoch: int) -> int:
        """The step after the epoch's last one (a trainer.steps run may end inside an epoch)."""
        return min((epoch + 1) * self.steps_per_epoch, self.total_steps)

    def lr(self, step: int) -> float:
        """Linear warm-up, then cosine down to min_lr."""
        return lr_at(step, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr)


def build_schedule(cfg, num_images: int, world: int) -> Schedule:
    t = cfg.trainer
    per_epoch = steps_per_epoch(num_images, int(t.batch_size), world)
    total = run_length(cfg, per_epoch)
    return Schedule(per_epoch, total, warmup_steps=min(int(float(t.warmup_epochs) * per_epoch), total),
                    peak_lr=peak_lr(t, int(t.batch_size) * world), min_lr=float(t.min_lr))
