"""Collapse metrics on embeddings (rows = samples), the per-epoch monitor and the `collapsed` rule.

Metric names in metrics.csv: unprefixed = the projector output (the embedding the loss sees; the backbone output
when a method has no projector), `backbone_` = the backbone features the probes read. Alignment and uniformity
(Wang & Isola 2020) are measured on l2-normalised embeddings of two augmented views of the held-out images; α-ReQ
and LiDAR (ssl_zoo.evaluation.label_free) on the raw embeddings, LiDAR on q views of some of them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.evaluation.label_free import LidarScatter, alpha_req, covariance_spectrum
from ssl_zoo.runs.layout import SPECTRA
from ssl_zoo.runs.spectrum_file import write_spectrum

RANKME_EPS = 1e-7  # Garrido et al. 2023: p_k = s_k / sum(s) + eps

# The documented `collapsed` rule (results.json): thresholds fixed before any study was run.
Z_STD_FRACTION = 0.2  # z_std below this fraction of the healthy 1/sqrt(d): the embeddings point one way
MIN_EFFECTIVE_RANK = 2.0  # RankMe below 2: the embeddings lie (almost) on a line
ENTROPY_LOW, ENTROPY_HIGH = 0.1, 0.95  # DINO teacher entropy as a fraction of log K: one-hot / uniform output
COLLAPSE_RULE = (f"collapsed = final projector z_std < {Z_STD_FRACTION}/sqrt(d), or final projector effective rank "
                 f"< {MIN_EFFECTIVE_RANK:g}, or (methods that log a teacher entropy, DINO) final teacher entropy "
                 f"< {ENTROPY_LOW} log K or > {ENTROPY_HIGH} log K")


def z_std(z: torch.Tensor) -> float:
    """Mean over channels of the std over samples of z/|z|: ~1/sqrt(d) when healthy, -> 0 when collapsed."""
    return F.normalize(z.float(), dim=1).std(dim=0).mean().item()


def effective_rank(z: torch.Tensor) -> float:
    """RankMe: exp(entropy of p_k = s_k / sum s + eps) over the singular values of the (uncentred) embedding
    matrix, as published; 1 for rank-1 embeddings (including all-equal ones), up to min(n, d)."""
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum().clamp_min(1e-30) + RANKME_EPS
    return torch.exp(-(p * p.log()).sum()).item()


def alignment(a: torch.Tensor, b: torch.Tensor) -> float:
    """E |f(x) - f(y)|^2 over positive pairs (rows of a and b), on l2-normalised embeddings: 0 = views agree."""
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    return (a - b).pow(2).sum(dim=1).mean().item()


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(-t |f(x) - f(y)|^2) over distinct pairs, l2-normalised: 0 when collapsed to a point, lower is
    more uniform on the sphere."""
    z = F.normalize(z.float(), dim=1)
    d2 = torch.pdist(z).pow(2)
    return (torch.logsumexp(-t * d2, dim=0) - math.log(len(d2))).item()


def embedding_metrics(z: torch.Tensor, prefix: str = "") -> dict[str, float]:
    return {f"{prefix}z_std": z_std(z), f"{prefix}z_std_ref": 1 / math.sqrt(z.shape[1]),
            f"{prefix}effective_rank": effective_rank(z), f"{prefix}alpha_req": alpha_req(z)}


Chunks = torch.Tensor | Iterable[torch.Tensor]  # one batch, or batches in order (at most one on the device at a time)


def _embed(method: nn.Module, x: Chunks) -> dict[str, torch.Tensor]:
    """The projector ("") and backbone ("backbone_") embeddings of all rows, a batch at a time: only the
    embeddings of the whole set are held, never the activations."""
    parts: dict[str, list[torch.Tensor]] = {"": [], "backbone_": []}
    for chunk in [x] if isinstance(x, torch.Tensor) else x:
        emb = method.embed(chunk)
        parts[""].append(emb.get("projector", emb["backbone"]))
        parts["backbone_"].append(emb["backbone"])
    return {prefix: torch.cat(zs) for prefix, zs in parts.items()}


@torch.no_grad()
def collapse_metrics(method: nn.Module, x: Chunks, views: Sequence[Chunks] | None = None, lidar_images: int = 0,
                     lidar_views: Sequence[Chunks] = ()) -> dict[str, float]:
    """Per-epoch metrics on fixed held-out images x (no augmentation) and, when given, two augmented views of
    them (a fixed generator, so the pairs are the same every epoch) for alignment and uniformity. With
    lidar_images >= 2, LiDAR of the first lidar_images images over that pair plus `lidar_views`, further views
    of those images: the pair costs no extra forward pass."""
    was_training = method.training
    method.eval()
    try:
        out: dict[str, float] = {}
        for prefix, z in _embed(method, x).items():
            out.update(embedding_metrics(z, prefix))
        if views is not None:
            za, zb = _embed(method, views[0]), _embed(method, views[1])
            for prefix in za:
                out[f"{prefix}alignment"] = alignment(za[prefix], zb[prefix])
                out[f"{prefix}uniformity"] = uniformity(za[prefix])
            if lidar_images >= 2:
                out.update(lidar_metrics(method, lidar_views, [{k: z[:lidar_images] for k, z in zs.items()}
                                                               for zs in (za, zb)]))
    finally:
        method.train(was_training)
    return out


@torch.no_grad()
def lidar_metrics(method: nn.Module, views: Sequence[Chunks],
                  embedded: Sequence[Mapping[str, torch.Tensor]] = ()) -> dict[str, float]:
    """LiDAR of the projector ("lidar") and backbone ("backbone_lidar") embeddings of q >= 2 views of the same
    images (each view's rows in image order): views already embedded ({prefix: embeddings}, as _embed gives),
    then `views` embedded one at a time, so only one view's embeddings are held at once."""
    was_training = method.training
    method.eval()
    try:
        scatter: dict[str, LidarScatter] = {}
        for zs in itertools.chain(embedded, (_embed(method, view) for view in views)):  # lazily: one at a time
            for prefix, z in zs.items():
                scatter.setdefault(prefix, LidarScatter()).add(z)
    finally:
        method.train(was_training)
    return {f"{prefix}lidar": s.value() for prefix, s in scatter.items()}


@torch.no_grad()
def save_spectra(run_dir: Path, method: nn.Module, x: Chunks) -> None:
    """spectrum.npy: covariance spectrum of the projector output on the held-out images at the end of training;
    spectrum_backbone.npy: the same for the backbone features."""
    was_training = method.training
    method.eval()
    try:
        emb = _embed(method, x)
    finally:
        method.train(was_training)
    for prefix in SPECTRA:
        write_spectrum(run_dir, prefix, covariance_spectrum(emb[prefix]).cpu().numpy())


def collapse_verdict(final: Mapping[str, float], num_outputs: int | None = None) -> tuple[bool, str]:
    """(collapsed, why) from the last metrics.csv row by COLLAPSE_RULE; num_outputs = K for the teacher entropy."""
    reasons = []
    zs, ref = final.get("z_std"), final.get("z_std_ref")
    if _finite(zs) and _finite(ref) and zs < Z_STD_FRACTION * ref:
        reasons.append(f"z_std {zs:.4f} < {Z_STD_FRACTION}/sqrt(d) = {Z_STD_FRACTION * ref:.4f}")
    er = final.get("effective_rank")
    if _finite(er) and er < MIN_EFFECTIVE_RANK:
        reasons.append(f"effective rank {er:.2f} < {MIN_EFFECTIVE_RANK:g}")
    h = final.get("teacher_entropy")
    if _finite(h) and num_outputs:
        frac = h / math.log(num_outputs)
        if frac < ENTROPY_LOW:
            reasons.append(f"teacher entropy {frac:.3f} log K < {ENTROPY_LOW} log K (one dimension dominates)")
        elif frac > ENTROPY_HIGH:
            reasons.append(f"teacher entropy {frac:.3f} log K > {ENTROPY_HIGH} log K (uniform output)")
    return bool(reasons), "; ".join(reasons)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def final_collapse(cfg, final: Mapping[str, float]) -> dict:
    """results.json fields: `collapsed` by COLLAPSE_RULE, why, and the final collapse metrics."""
    from omegaconf import OmegaConf

    k = OmegaConf.select(cfg, "method.head.num_prototypes")  # K of a teacher distribution (DINO), if any
    collapsed, why = collapse_verdict(final, int(k) if k else None)
    keys = [key for key in final if key.startswith(("backbone_", "z_std", "effective_rank", "alignment",
                                                     "uniformity", "alpha_req", "lidar", "teacher_entropy", "kl_"))]
    # null, not NaN, where a metric has no value (α-ReQ of a rank-1 output): results.json stays strict JSON
    return {"collapsed": collapsed, "collapse_reason": why,
            **{key: final[key] if not isinstance(final[key], float) or math.isfinite(final[key]) else None
               for key in keys}}
