"""BYOL (Grill et al. 2020).

Loss: 2 - 2 cos(q, z') per pair, symmetrised over the two views; q = predictor(projector(encoder(v))) online,
z' = projector'(encoder'(v')) from the target.
Target rule: target = EMA of online encoder+projector, tau = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.models.heads import mlp
from ssl_zoo.models.method import Method, StepOutput
from ssl_zoo.models.targets import ema_update, frozen_copy, momentum_at


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 2 - 2 cos(p, z); z is the (already detached) target."""
    return (2 - 2 * F.cosine_similarity(p, z, dim=-1)).mean()


class BYOL(Method):
    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__(backbone, feat_dim, cfg, epochs)
        self.projector = mlp(feat_dim, cfg.projector)
        pred = cfg.predictor
        self.predictor = mlp(int(cfg.projector.out_dim), pred) if pred.enabled else nn.Identity()
        self.predictor.requires_grad_(bool(pred.trainable))
        self.target = frozen_copy(nn.Sequential(self.backbone, self.projector))

    def tau(self, progress: float) -> float:
        return momentum_at(float(self.cfg.tau_base), progress, str(self.cfg.tau_schedule))

    def training_step(self, views, progress):
        v1, v2 = views[0], views[1]
        h1 = self.backbone(v1)
        p1, p2 = self.predictor(self.projector(h1)), self.predictor(self.projector(self.backbone(v2)))
        with torch.no_grad():
            z1, z2 = self.target(v1), self.target(v2)
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return StepOutput(loss, {"tau": self.tau(progress)}, features=h1)

    @torch.no_grad()
    def after_step(self, progress):
        ema_update(self.target, nn.Sequential(self.backbone, self.projector), self.tau(progress))


METHOD = BYOL
