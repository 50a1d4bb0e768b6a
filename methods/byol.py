"""BYOL (Grill et al. 2020).

Loss: 2 - 2 cos(q, z') per pair, symmetrised over the two views; q = predictor(projector(encoder(v))) online,
z' = projector'(encoder'(v')) from the target.
Target rule: target = EMA of online encoder+projector, tau = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.models.heads import mlp, predictor_head
from ssl_zoo.models.method import Method, StepOutput

Pair = tuple[torch.Tensor, torch.Tensor]


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 2 - 2 cos(p, z); z is the (already detached) target."""
    return (2 - 2 * F.cosine_similarity(p, z, dim=-1)).mean()


def online_and_target(m: Method, v1: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, Pair, Pair]:
    """(h1, (p1, p2), (z1, z2)): online backbone features of v1, the online predictions
    predictor(projector(backbone(v))) of both views and the target's projections of both (no gradient).
    MoCo v3 computes the same two branches."""
    h1 = m.backbone(v1)
    p1, p2 = m.predictor(m.projector(h1)), m.predictor(m.projector(m.backbone(v2)))
    with torch.no_grad():
        z1, z2 = m.target(v1), m.target(v2)
    return h1, (p1, p2), (z1, z2)


class BYOL(Method):
    momentum_pairs = {"target": ("backbone", "projector")}  # target rule: EMA of these (Method.after_step)

    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__(backbone, feat_dim, cfg, epochs)
        self.projector = mlp(feat_dim, cfg.projector)
        self.predictor = predictor_head(int(cfg.projector.out_dim), cfg.predictor)
        self.make_momentum_targets()

    def training_step(self, views, progress):
        h1, (p1, p2), (z1, z2) = online_and_target(self, views[0], views[1])
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return StepOutput(loss, {"tau": self.tau(progress)}, features=h1)


METHOD = BYOL
