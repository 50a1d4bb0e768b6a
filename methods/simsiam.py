"""SimSiam (Chen & He 2021).

Loss: D(p1, sg(z2))/2 + D(p2, sg(z1))/2 with D the negative cosine similarity; p = predictor(z),
z = projector(encoder(v)), one shared encoder.
Target rule: none besides the stop-gradient (sg) on the target branch; `stop_gradient: false` removes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.models.heads import mlp, predictor_head
from ssl_zoo.models.method import Method, StepOutput


def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Negative cosine similarity, mean over the batch (z detached by the caller when stop-gradient is on)."""
    return -F.cosine_similarity(p, z, dim=-1).mean()


class SimSiam(Method):
    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__(backbone, feat_dim, cfg, epochs)
        self.projector = mlp(feat_dim, cfg.projector)
        self.predictor = predictor_head(int(cfg.projector.out_dim), cfg.predictor)

    def training_step(self, views, progress):
        h1 = self.backbone(views[0])
        z1, z2 = self.projector(h1), self.projector(self.backbone(views[1]))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        if self.cfg.stop_gradient:
            z1, z2 = z1.detach(), z2.detach()
        loss = simsiam_loss(p1, z2) / 2 + simsiam_loss(p2, z1) / 2
        return StepOutput(loss, features=h1)


METHOD = SimSiam
