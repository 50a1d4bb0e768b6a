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


class EpochMonitor:
    def __init__(self, images: torch.Tensor, views: ViewMaker, image_size: int, mean: Sequence[float],
                 std: Sequence[float], seed: int, device: torch.device, batch_size: int):
        """`images`: uint8 held-out images on the CPU (decoded once); `views`: the run's augmentations;
        `batch_size`: the most images one forward pass sees."""
        self.images, self.views, self.device, self.seed = images, views, device, seed
        self.image_size, self.mean, self.std = image_size, list(mean), list(std)
        self.batch_size = max(1, batch_size)

    def __len__(self) -> int:
        return len(self.images)

    def _batches(self) -> Iterator[tuple[slice, torch.Tensor]]:
        """(rows, uint8 images on the device) a batch at a time."""
        for start in range(0, len(self.images), self.batch_size):
            rows = slice(start, start + self.batch_size)
            yield rows, self.images[rows].to(self.device)

    def plain_input(self) -> Iterator[torch.Tensor]:
        """The held-out images under the evaluation transform, on the device, a batch at a time."""
        for _, x in self._batches():
            yield plain_view(x, self.image_size, self.mean, self.std)

    def _view(self, view: int, uniforms: torch.Tensor) -> Iterator[torch.Tensor]:
        for rows, x in self._batches():
            yield self.views.view_chunk(x, view, uniforms[rows])

    def metrics(self, method: nn.Module) -> dict[str, float]:
        # Two augmented views of the held-out images from a fixed generator (the same pairs every epoch, drawn
        # apart from the training draws) give alignment and uniformity. The random draws for all images are made
        # first, as one batch would make them, so the views do not depend on the batch size.
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 0x5EED)
        uniforms = self.views.draw(len(self.images), gen, self.device, NUM_MONITOR_VIEWS)
        views = [self._view(v, u) for v, u in enumerate(uniforms)]
        return monitors.collapse_metrics(method, self.plain_input(), views)

    def save_spectra(self, run_dir: Path, method: nn.Module) -> None:
        monitors.save_spectra(run_dir, method, self.plain_input())
