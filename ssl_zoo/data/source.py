"""The one interface training and evaluation read a dataset through.

Two kinds implement it: data.in_memory.ImageData (whole uint8 tensors; views are made on the device from whole
images) and data.streaming.loader.StreamedData (files decoded and cropped by DataLoader workers). Each kind keeps
its own way of reading behind these methods, so no caller ever asks which kind it holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ssl_zoo.common.errors import UserError
from ssl_zoo.data.streaming.bad_samples import Entry
from ssl_zoo.data.views import ViewMaker

# One step's uint8 input: a batch of whole images [B, C, H, W], or each view recipe's crops [n*B, C, s, s].
PretrainBatch = tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order pretraining reads the n images in during an epoch: the same for both kinds, any process count."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


@dataclass(frozen=True)
class LabelledCrop:
    """The supervised augmentation of the SGD linear evaluation: RandomResizedCrop and a horizontal flip."""
    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    flip_p: float


class PretrainInput(Protocol):
    """One run's pretraining input, on its device, for one process of `world`."""

    # Set (not raised) when this process met more unreadable samples than data.max_bad_fraction allows: the
    # trainer raises it at the next step's stop vote, on every process at once.
    bad_data_error: UserError | None

    def batches(self, epoch: int, steps: range) -> Iterator[PretrainBatch]:
        """(uint8 input, labels, -1 for unlabelled images) of the epoch's batches `steps`, this process's slice of
        each global batch, on the device, in epoch_order."""
        ...


@runtime_checkable
class DataSource(Protocol):
    """A dataset as training and evaluation read it. Split images (train_x, test_x) are a uint8 tensor
    [N, C, H, W] or lazily decoded images; either kind slices (`[:n]`), has len() and decodes with .to(device)."""

    train_x: Any  # the labelled train split
    train_y: torch.Tensor
    test_x: Any
    test_y: torch.Tensor
    num_classes: int

    @property
    def num_pretrain_images(self) -> int:
        """Images pretraining draws from (the labelled train split, plus unlabelled ones where a dataset has them)."""
        ...

    @property
    def in_memory(self) -> bool:
        """Whether the images are whole tensors in memory: fine-tuning indexes them, and features of them fit in
        memory (otherwise the evaluation writes features to memory-mapped files)."""
        ...

    def pretrain_input(self, views: ViewMaker, device: torch.device, seed: int, batch_size: int, rank: int,
                       world: int, run_dir: Path | None) -> PretrainInput:
        """The input of a run: `views` are the run's augmentations (streamed data cuts their crops in the
        workers), `run_dir` where unreadable samples are listed."""
        ...

    def image_batches(self, images: Any, batch_size: int) -> Iterator[torch.Tensor]:
        """`images` (a split of this dataset, or its first n) as uint8 batches, in order."""
        ...

    def labelled_views(self, images: Any, labels: torch.Tensor, crop: LabelledCrop, seed: int, epoch: int,
                       batch_size: int, generator: torch.Generator, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (float [B, C, size, size] crops in [0, 1], labels) of `images` with `labels`, on the
        device, in an order drawn from (seed, epoch); `generator` draws the flips (and in memory the crops)."""
        ...

    def take_bad(self) -> list[Entry]:
        """The unreadable images the evaluation met since the last call (none in memory)."""
        ...
