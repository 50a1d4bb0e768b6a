"""Collapse metrics on embeddings (rows = samples)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def z_std(z: torch.Tensor) -> float:
    """Mean over channels of the std over samples of z/|z|: ~1/sqrt(d) when healthy, -> 0 when collapsed."""
    return F.normalize(z.float(), dim=1).std(dim=0).mean().item()


def singular_values(z: torch.Tensor) -> torch.Tensor:
    """Singular values of the centred embedding matrix, sorted descending (the spectrum of its covariance)."""
    z = z.float() - z.float().mean(dim=0)
    return torch.linalg.svdvals(z)


def effective_rank(z: torch.Tensor) -> float:
    """RankMe: exp(entropy of p_k = s_k / sum s), between 1 (rank-1) and min(n, d)."""
    s = singular_values(z)
    p = s / s.sum().clamp_min(1e-12)
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum()).item()


@torch.no_grad()
def collapse_metrics(method: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Per-epoch metrics on fixed held-out images without augmentation (method in eval mode)."""
    was_training = method.training
    method.eval()
    emb = method.embed(x)
    method.train(was_training)
    z = emb.get("projector", emb["backbone"])
    return {"z_std": z_std(z), "z_std_ref": 1 / math.sqrt(z.shape[1]), "effective_rank": effective_rank(z)}
