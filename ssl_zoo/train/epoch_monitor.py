"""Collapse metrics of fixed held-out images, measured at every epoch's end (metrics.csv), and their covariance
spectrum at the end of training (spectrum.npy); ssl_zoo.evaluation.monitors computes them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ssl_zoo.data.views import ViewMaker, plain_view
from ssl_zoo.evaluation import monitors


class EpochMonitor:
    def __init__(self, images: torch.Tensor, views: ViewMaker, image_size: int, mean: Sequence[float],
                 std: Sequence[float], seed: int, device: torch.device):
        """`images`: uint8 held-out images on the CPU (decoded once); `views`: the run's augmentations."""
        self.images, self.views, self.device, self.seed = images, views, device, seed
        self.image_size, self.mean, self.std = image_size, list(mean), list(std)

    def __len__(self) -> int:
        return len(self.images)

    def plain_input(self) -> torch.Tensor:
        """The held-out images under the evaluation transform, on the device."""
        return plain_view(self.images.to(self.device), self.image_size, self.mean, self.std)

    def metrics(self, method: nn.Module) -> dict[str, float]:
        # Two augmented views of the held-out images from a fixed generator (the same pairs every epoch, drawn
        # apart from the training draws) give alignment and uniformity.
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 0x5EED)
        views = self.views(self.images.to(self.device), gen)[:2]
        return monitors.collapse_metrics(method, self.plain_input(), views)

    def save_spectra(self, run_dir: Path, method: nn.Module) -> None:
        monitors.save_spectra(run_dir, method, self.plain_input())
