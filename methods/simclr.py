"""SimCLR (Chen et al. 2020).

Loss: NT-Xent over the 2N views of a (global) batch: for each view z_i = projector(encoder(v_i)), the other
view of the same image is the positive and every other of the 2N - 2 views a negative; cross-entropy of
cos(z_i, z_j) / T over j != i, averaged over the views. Under DDP the negatives are gathered from every rank
(with gradient).
Target rule: none (one shared encoder, no stop-gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.common.distributed import all_gather_cat, is_distributed, rank
from ssl_zoo.models.heads import mlp
from ssl_zoo.models.method import Method, StepOutput


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, z1_all: torch.Tensor | None = None,
            z2_all: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
    """NT-Xent for local views z1, z2 [B, d] against all views z1_all, z2_all [N, d] (default: the local ones);
    the local batch starts at row `offset` of the gathered one."""
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    anchors = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    cands = F.normalize(torch.cat([z1_all, z2_all]).float(), dim=1)
    b, n = len(z1), len(z1_all)
    own = torch.arange(b, device=z1.device) + offset
    self_idx, pos_idx = torch.cat([own, own + n]), torch.cat([own + n, own])
    logits = anchors @ cands.T / temperature
    logits[torch.arange(2 * b, device=z1.device), self_idx] = float("-inf")  # a view is not its own negative
    return F.cross_entropy(logits, pos_idx)


class SimCLR(Method):
    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__(backbone, feat_dim, cfg, epochs)
        self.projector = mlp(feat_dim, cfg.projector)

    def training_step(self, views, progress):
        h1 = self.backbone(views[0])
        z1, z2 = self.projector(h1), self.projector(self.backbone(views[1]))
        t = float(self.cfg.temperature)
        if is_distributed():
            loss = nt_xent(z1, z2, t, all_gather_cat(z1, grad=True), all_gather_cat(z2, grad=True),
                           rank() * len(z1))
        else:
            loss = nt_xent(z1, z2, t)
        return StepOutput(loss, features=h1)


METHOD = SimCLR
