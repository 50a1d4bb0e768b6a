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
from ssl_zoo.methods.byol import online_and_target  # BYOL's two branches; only the loss differs
from ssl_zoo.models.heads import mlp, predictor_head
from ssl_zoo.models.method import Method, StepOutput


def info_nce_in_batch(q: torch.Tensor, k_all: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """2T * cross-entropy of q.k_all / T; query i's positive is key offset + i (offset = rank * local batch)."""
    q, k_all = F.normalize(q.float(), dim=1), F.normalize(k_all.float(), dim=1)
    labels = torch.arange(len(q), device=q.device) + offset
    return F.cross_entropy(q @ k_all.T / temperature, labels) * 2 * temperature


class MoCoV3(Method):
    momentum_pairs = {"target": ("backbone", "projector")}  # target rule: EMA of these (Method.after_step)

    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__(backbone, feat_dim, cfg, epochs)
        if cfg.freeze_patch_embed:
            patch_embed = getattr(backbone, "patch_embed", None)
            if patch_embed is None:
                raise UserError("method.freeze_patch_embed=true needs a ViT encoder with a patch_embed "
                                "(e.g. encoder=vit_small); set it to false for this encoder")
            patch_embed.requires_grad_(False)
        self.projector = mlp(feat_dim, cfg.projector)
        self.predictor = predictor_head(int(cfg.projector.out_dim), cfg.predictor)
        self.make_momentum_targets()

    def training_step(self, views, progress):
        h1, (q1, q2), (k1, k2) = online_and_target(self, views[0], views[1])
        k1, k2 = all_gather_cat(k1), all_gather_cat(k2)  # the keys of the global batch
        t, offset = float(self.cfg.temperature), rank() * len(views[0])
        loss = info_nce_in_batch(q1, k2, t, offset) + info_nce_in_batch(q2, k1, t, offset)
        return StepOutput(loss, {"tau": self.tau(progress)}, features=h1)


METHOD = MoCoV3
