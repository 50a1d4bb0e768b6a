"""VICReg (Bardes et al. 2022).

Loss: with z1, z2 = expander(encoder(v1, v2)) (gathered from every rank for the variance and covariance terms),
  invariance  s = mean((z1 - z2)^2)                                     (MSE, per rank)
  variance    v = mean_j relu(gamma - sqrt(Var(z_j) + eps)), averaged over z1 and z2   (hinge on the std)
  covariance  c = sum_{i != j} Cov(z)_ij^2 / d, summed over z1 and z2
  loss = sim_coeff * s + std_coeff * v + cov_coeff * c            (published 25 / 25 / 1, gamma 1, eps 1e-4)
Ablations: std_coeff = 0 (no variance term: complete collapse expected), cov_coeff = 0 (no covariance term:
dimensional collapse expected).
Target rule: none (one shared encoder and expander).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.common.distributed import all_gather_cat
from ssl_zoo.models.heads import mlp
from ssl_zoo.models.method import Method, StepOutput


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    return m - torch.diag_embed(torch.diagonal(m))


def variance_term(z: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    """mean_j relu(gamma - std_j), std with the unbiased variance (as the official code)."""
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """sum of squared off-diagonal covariances / d."""
    z = z - z.mean(dim=0)
    cov = z.T @ z / (len(z) - 1)
    return off_diagonal(cov).pow(2).sum() / z.shape[1]


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, gamma: float = 1.0,
                 eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(invariance, variance, covariance) of one pair of embeddings [N, d] (fp32)."""
    z1, z2 = z1.float(), z2.float()
    inv = F.mse_loss(z1, z2)
    g1, g2 = all_gather_cat(z1, grad=True), all_gather_cat(z2, grad=True)
    var = (variance_term(g1, gamma, eps) + variance_term(g2, gamma, eps)) / 2
    cov = covariance_term(g1) + covariance_term(g2)
    return inv, var, cov


class VICReg(Method):
    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__(backbone, feat_dim, cfg, epochs)
        self.projector = mlp(feat_dim, cfg.projector)  # the "expander"

    def training_step(self, views, progress):
        h1 = self.backbone(views[0])
        z1, z2 = self.projector(h1), self.projector(self.backbone(views[1]))
        c = self.cfg
        inv, var, cov = vicreg_terms(z1, z2, float(c.gamma), float(c.eps))
        loss = float(c.sim_coeff) * inv + float(c.std_coeff) * var + float(c.cov_coeff) * cov
        logs = {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}
        return StepOutput(loss, logs, features=h1)


METHOD = VICReg
