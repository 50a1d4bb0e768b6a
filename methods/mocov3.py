"""MoCo v3 (Chen, Xie & He 2021).

Loss: symmetric InfoNCE over in-batch keys, no queue: for q1 = predictor(projector(encoder(v1))) and the
momentum keys k2 of every image in the (global) batch, cross-entropy of q1.k2 / T with the positive at the
image's own index, times 2T; plus the (q2, k1) term. Keys are gathered from every rank under DDP.
Target rule: momentum encoder+projector = EMA of the online ones, m = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2.
`freeze_patch_embed: true` keeps a ViT's random patch projection fixed (the paper's stability trick).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.common.distributed import all_gather_cat, rank
from ssl_zoo.common.errors import UserError
from ssl_zoo.models.heads import mlp
from ssl_zoo.models.method import Method, StepOutput
from ssl_zoo.models.targets import ema_update, frozen_copy, momentum_at


def info_nce_in_batch(q: torch.Tensor, k_all: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """2T * cross-entropy of q.k_all / T; query i's positive is key offset + i (offset = rank * local batch)."""
    q, k_all = F.normalize(q.float(), dim=1), F.normalize(k_all.float(), dim=1)
    labels = torch.arange(len(q), device=q.device) + offset
    return F.cross_entropy(q @ k_all.T / temperature, labels) * 2 * temperature


class MoCoV3(Method):
    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__(backbone, feat_dim, cfg, epochs)
        if cfg.freeze_patch_embed:
            patch_embed = getattr(backbone, "patch_embed", None)
            if patch_embed is None:
                raise UserError("method.freeze_patch_embed=true needs a ViT encoder with a patch_embed "
                                "(e.g. encoder=vit_small); set it to false for this encoder")
            patch_embed.requires_grad_(False)
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
        q1, q2 = self.predictor(self.projector(h1)), self.predictor(self.projector(self.backbone(v2)))
        with torch.no_grad():
            k1, k2 = all_gather_cat(self.target(v1)), all_gather_cat(self.target(v2))
        t, offset = float(self.cfg.temperature), rank() * len(v1)
        loss = info_nce_in_batch(q1, k2, t, offset) + info_nce_in_batch(q2, k1, t, offset)
        return StepOutput(loss, {"tau": self.tau(progress)}, features=h1)

    @torch.no_grad()
    def after_step(self, progress):
        ema_update(self.target, nn.Sequential(self.backbone, self.projector), self.tau(progress))


METHOD = MoCoV3
