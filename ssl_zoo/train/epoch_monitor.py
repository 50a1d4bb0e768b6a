"""Collapse metrics of fixed held-out images, measured at every epoch's end (metrics.csv), and their covariance
spectrum at the end of training (spectrum.npy); ssl_zoo.evaluation.monitors computes them.

The images go through the model batch_size at a time (the training batch): memory stays that of one training
step however many images are monitored, and the numbers are those of one pass over all of them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from ssl_zoo.data.views import ViewMaker, plain_view
from ssl_zoo.evaluation import monitors

NUM_MONITOR_VIEWS = 2  # a pair of views per image gives alignment; the first of them gives uniformity
LIDAR_SEED = 0x11DA2  # LiDAR's further views come from their own generator: the alignment pairs stay as they were


class EpochMonitor:
    def __init__(self, images: torch.Tensor, views: ViewMaker, image_size: int, mean: Sequence[float],
                 std: Sequence[float], seed: int, device: torch.device, batch_size: int, lidar_images: int = 0,
                 lidar_views: int = NUM_MONITOR_VIEWS):
        """`images`: uint8 held-out images on the CPU (decoded once); `views`: the run's augmentations;
        `batch_size`: the most images one forward pass sees; LiDAR on `lidar_views` views of the first
        `lidar_images` images (off below 2 images): the alignment pair, then lidar_views - 2 more."""
        self.images, self.views, self.device, self.seed = images, views, device, seed
        self.image_size, self.mean, self.std = image_size, list(mean), list(std)
        self.batch_size = max(1, batch_size)
        self.lidar_images, self.lidar_views = min(lidar_images, len(images)), lidar_views

    def __len__(self) -> int:
        return len(self.images)

    def _batches(self, count: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
        """(rows, uint8 images on the device) a batch at a time, of the first `count` images (default: all)."""
        count = len(self.images) if count is None else count
        for start in range(0, count, self.batch_size):
            rows = slice(start, min(start + self.batch_size, count))
            yield rows, self.images[rows].to(self.device)

    def plain_input(self) -> Iterator[torch.Tensor]:
        """The held-out images under the evaluation transform, on the device, a batch at a time."""
        for _, x in self._batches():
            yield plain_view(x, self.image_size, self.mean, self.std)

    def _view(self, view: int, uniforms: torch.Tensor, count: int | None = None) -> Iterator[torch.Tensor]:
        for rows, x in self._batches(count):
            yield self.views.view_chunk(x, view, uniforms[rows])

    def lidar_extra_views(self) -> list[Iterator[torch.Tensor]]:
        """The lidar_views - 2 views of the first lidar_images images beyond the alignment pair, each a batch at
        a time. They take turns over the recipes of the pair (the global crops; multi-crop's small crops are left
        out), with draws from a fixed generator: the same views every epoch, whatever the batch size."""
        extra = self.lidar_views - NUM_MONITOR_VIEWS
        if self.lidar_images < 2 or extra < 1:
            return []
        gen = torch.Generator(device=self.device).manual_seed(self.seed + LIDAR_SEED)
        recipes = min(NUM_MONITOR_VIEWS, self.views.num_views)
        uniforms: list[tuple[int, torch.Tensor]] = []
        while len(uniforms) < extra:
            uniforms += list(enumerate(self.views.draw(self.lidar_images, gen, self.device, recipes)))
        return [self._view(v, u, self.lidar_images) for v, u in uniforms[:extra]]

    def metrics(self, method: nn.Module) -> dict[str, float]:
        # Two augmented views of the held-out images from a fixed generator (the same pairs every epoch, drawn
        # apart from the training draws) give alignment and uniformity. The random draws for all images are made
        # first, as one batch would make them, so the views do not depend on the batch size.
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 0x5EED)
        uniforms = self.views.draw(len(self.images), gen, self.device, NUM_MONITOR_VIEWS)
        views = [self._view(v, u) for v, u in enumerate(uniforms)]
        # LiDAR (Thilak et al. 2023): the first lidar_images images as classes, the pair plus further views
        return monitors.collapse_metrics(method, self.plain_input(), views, self.lidar_images, self.lidar_extra_views())

    def save_spectra(self, run_dir: Path, method: nn.Module) -> None:
        monitors.save_spectra(run_dir, method, self.plain_input())
