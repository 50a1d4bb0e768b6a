"""Barlow Twins (Zbontar et al. 2021).

Loss: with z1, z2 = projector(encoder(v1, v2)) standardised per dimension over the batch (BN without
affine, batch statistics), C = z1^T z2 / N; loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2.
lambda defaults to the paper's 0.0051 (a constant, not scaled by 1/d). Under DDP C is averaged over ranks
(each rank standardises its own batch).
Target rule: none (one shared encoder).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.common.distributed import all_reduce_mean_, is_distributed
from ssl_zoo.models.heads import mlp
from ssl_zoo.models.method import Method, StepOutput


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """C = bn(z1)^T bn(z2) / N, bn = standardisation with batch statistics (biased variance, as BN)."""
    z1 = F.batch_norm(z1.float(), None, None, training=True, eps=eps)
    z2 = F.batch_norm(z2.float(), None, None, training=True, eps=eps)
    return z1.T @ z2 / len(z1)


def barlow_loss(c: torch.Tensor, lambd: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(on + lambd * off, on, off): on = sum_i (1 - C_ii)^2, off = sum_{i != j} C_ij^2."""
    diag = torch.diagonal(c)
    on = (1 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + lambd * off, on, off


class BarlowTwins(Method):
    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__(backbone, feat_dim, cfg, epochs)
        self.projector = mlp(feat_dim, cfg.projector)

    def training_step(self, views, progress):
        h1 = self.backbone(views[0])
        c = cross_correlation(self.projector(h1), self.projector(self.backbone(views[1])))
        if is_distributed():  # value: the mean over ranks; gradient: the local term (DDP averages it)
            c = c + (all_reduce_mean_(c.detach().clone()) - c.detach())
        loss, on, off = barlow_loss(c, float(self.cfg.lambd))
        return StepOutput(loss * float(self.cfg.scale_loss), {"on_diag": on.detach(), "off_diag": off.detach()}, features=h1)


METHOD = BarlowTwins
