"""Datasets held whole in memory: uint8 tensors [N, C, H, W] plus labels, small enough to live on the GPU, so
views are made batched from whole images, without per-sample loaders (data.source's DataSource)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ssl_zoo.common.errors import UserError
from ssl_zoo.data.source import LabelledCrop, PretrainBatch, epoch_order
from ssl_zoo.data.streaming.bad_samples import Entry
from ssl_zoo.data.views import ViewMaker, random_resized_crop_flip


def tensor_batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    return (images[i:i + batch_size] for i in range(0, len(images), batch_size))


@dataclass
class ImageData:
    train_x: torch.Tensor  # uint8 [N, C, H, W], labelled train split
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    unlabeled_x: torch.Tensor | None = None  # extra images used only for pretraining (STL-10)

    @property
    def pretrain_x(self) -> torch.Tensor:
        if self.unlabeled_x is None:
            return self.train_x
        return torch.cat([self.train_x, self.unlabeled_x])

    @property
    def num_pretrain_images(self) -> int:
        return len(self.train_x) + (0 if self.unlabeled_x is None else len(self.unlabeled_x))

    @property
    def in_memory(self) -> bool:
        return True

    def pretrain_input(self, views: ViewMaker, device: torch.device, seed: int, batch_size: int, rank: int,
                       world: int, run_dir: Path | None) -> DevicePretrainInput:
        return DevicePretrainInput(self, device, seed, batch_size, rank, world)

    def image_batches(self, images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        return tensor_batches(images, batch_size)

    def labelled_views(self, images: torch.Tensor, labels: torch.Tensor, crop: LabelledCrop, seed: int, epoch: int,
                       batch_size: int, generator: torch.Generator, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(images)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1009 + epoch))
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            x = images[idx].to(device).float() / 255
            yield (random_resized_crop_flip(x, crop.size, crop.scale, crop.ratio, crop.flip_p, generator),
                   labels[idx].to(device))

    def take_bad(self) -> list[Entry]:
        return []  # tensors in memory are always readable


class DevicePretrainInput:
    """The pretraining images copied to the device once; each batch is an index into them."""

    bad_data_error: UserError | None = None  # images in memory are never unreadable

    def __init__(self, data: ImageData, device: torch.device, seed: int, batch_size: int, rank: int, world: int):
        self.device, self.seed, self.batch_size, self.rank, self.world = device, seed, batch_size, rank, world
        self.images = data.pretrain_x.to(device)
        unlabeled = len(self.images) - len(data.train_y)  # STL-10's unlabeled images carry label -1
        self.labels = torch.cat([data.train_y, data.train_y.new_full((unlabeled,), -1)]).to(device)

    def batches(self, epoch: int, steps: range) -> Iterator[PretrainBatch]:
        order = epoch_order(len(self.images), self.seed, epoch).to(self.device)  # one copy per epoch
        for i in steps:  # this rank's slice of the global batch i
            start = i * self.batch_size * self.world + self.rank * self.batch_size
            idx = order[start:start + self.batch_size]
            yield self.images[idx], self.labels[idx]
