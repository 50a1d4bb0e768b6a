"""The few settings the training loop reads; ssl_zoo.train.build makes them from a run's config."""

from __future__ import annotations

from dataclasses import dataclass

from ssl_zoo.train.schedule import Schedule


@dataclass(frozen=True)
class TrainSettings:
    seed: int  # the data order (seed, epoch) and the views (seed, step) are drawn from it
    batch_size: int  # images per process and step (the global batch is world x batch_size)
    schedule: Schedule
    grad_clip: float | None  # max gradient norm (trainer.grad_clip), None: no clipping
    bf16: bool  # steps under bfloat16 autocast (trainer.precision)
    channels_last: bool  # views in the convolutions' fast memory layout (the method is converted to it too)
    cuda_graphs: bool  # compiled with mode=reduce-overhead: each step marks its start
    checkpoint_every: int  # epochs between checkpoints (and always after the last step)
    log_every: int  # steps between loss reads: the divergence check, the progress bar, per-step tracker points
    progress_bar: bool  # a live bar when stderr is a terminal, else one line per epoch
