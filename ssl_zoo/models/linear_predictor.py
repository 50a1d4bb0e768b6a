"""The linear predictor of Tian, Chen & Ganguli (ICML 2021, "Understanding self-supervised learning dynamics
without contrastive pairs"): one bias-free d x d layer W_p, no normalisation, trained (`kind: linear`) or set
directly from the correlation of its inputs (`kind: directpred`), and the numbers that show its eigenspace
aligning with that correlation.

F-hat is the running E[f f^T] of the predictor's inputs f (the online projector outputs of both views, uncentred):
F-hat <- rho F-hat + (1 - rho) E_batch[f f^T] after every step, over the global batch under DDP. DirectPred sets
W_p = U diag(p) U^T from F-hat = U diag(s) U^T, p_j = sqrt(s_j / max s) + eps, every `freq` steps; before its
first update W_p is the identity. The published settings: rho 0.3, eps 0.01, freq 1 (facebookresearch/luckmatters,
ssl/real-dataset: `predictor_reg=corr`, `balance_type=boost_scale`, `dyn_convert=2`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.common.distributed import all_reduce_mean_

KINDS = ("mlp", "linear", "directpred")
USED_FRACTION = 1e-3  # F's eigenvectors that count for the alignment: eigenvalue >= this x the largest


def directpred_weight(corr: torch.Tensor, eps: float) -> torch.Tensor:
    """W_p = U diag(sqrt(s / max s) + eps) U^T for corr = U diag(s) U^T (negative round-off eigenvalues read 0)."""
    s, u = torch.linalg.eigh(corr.double())
    s = s.clamp_min(0)
    p = (s / s.max().clamp_min(1e-30)).sqrt() + eps
    return ((u * p) @ u.T).to(corr.dtype)


def alignment_metrics(corr: torch.Tensor, weight: torch.Tensor, top: int = 3) -> dict[str, float]:
    """How far W_p's eigenspace has aligned with that of F (= corr):

    - alignment: the mean of c_i = |u_i^T W_s u_i| / |W_s u_i| over F's eigenvectors u_i whose eigenvalue is at
      least USED_FRACTION of the largest, W_s = (W_p + W_p^T) / 2: c_i is 1 exactly when u_i is an eigenvector of
      W_s. Chosen over matching eigenvectors pairwise (mean_i max_j |u_i^T v_j|) because W_s's eigenvalues are
      often (nearly) equal (an identity-like W_p early on; DirectPred's tail at eps), where its individual
      eigenvectors are arbitrary and pairwise matching reads misalignment that is not there. Not weighted by
      F's eigenvalues: the uncentred F is dominated by the mean direction, which would make the number that of
      one direction; F's numerically-zero tail is left out because its eigenvectors are arbitrary.
    - commutator: |F W_p - W_p F| / (|F| |W_p|) (Frobenius norms), 0 when they commute.
    - asymmetry: |W_p - W_p^T| / |W_p|, 0 for a symmetric W_p (the analysis predicts W_p becomes symmetric).
    - eig1..: the largest eigenvalues of W_s, input_eig1..: those of F.
    """
    f = (corr.double() + corr.double().T) / 2
    w = weight.double()
    ws = (w + w.T) / 2
    s, u = torch.linalg.eigh(f)
    s, u = s.flip(0).clamp_min(0), u.flip(1)
    used = s >= USED_FRACTION * s[0]
    used[0] = True  # an all-zero F: its first eigenvector stands for it
    wu = ws @ u[:, used]
    c = (u[:, used] * wu).sum(dim=0).abs() / wu.norm(dim=0).clamp_min(1e-30)
    tiny = torch.tensor(1e-30, dtype=torch.float64)
    out = {"alignment": float(c.mean()),
           "commutator": float((f @ w - w @ f).norm() / (f.norm() * w.norm()).clamp_min(tiny)),
           "asymmetry": float((w - w.T).norm() / w.norm().clamp_min(tiny))}
    w_eigs = torch.linalg.eigvalsh(ws).flip(0)
    for i in range(min(top, len(s))):
        out[f"eig{i + 1}"] = float(w_eigs[i])
        out[f"input_eig{i + 1}"] = float(s[i])
    return out


class LinearPredictor(nn.Module):
    """p = W_p f. kind="linear": W_p is a trained parameter; kind="directpred": a buffer set from F-hat."""

    def __init__(self, dim: int, kind: str, rho: float = 0.3, eps: float = 0.01, freq: int = 1):
        super().__init__()
        if kind not in ("linear", "directpred"):
            raise ValueError(f"kind={kind!r}; a LinearPredictor is linear or directpred")
        self.kind, self.rho, self.eps, self.freq = kind, float(rho), float(eps), max(int(freq), 1)
        if kind == "linear":
            self.weight = nn.Parameter(nn.Linear(dim, dim, bias=False).weight.detach().clone())
        else:
            self.register_buffer("weight", torch.eye(dim))
        self.register_buffer("corr", torch.zeros(dim, dim))  # F-hat
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # F-hat updates so far
        self.register_buffer("batch_corr", torch.zeros(dim, dim))  # sum of f f^T over this step's inputs
        self.register_buffer("batch_rows", torch.zeros(()))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():  # a training step: its inputs feed F-hat in after_step
            with torch.no_grad():
                g = f.detach().float()
                self.batch_corr.add_(g.T @ g)
                self.batch_rows.add_(len(g))
        return F.linear(f, self.weight.to(f.dtype))

    @torch.no_grad()
    def after_step(self) -> None:
        """F-hat <- rho F-hat + (1 - rho) E[f f^T] of this step (the global batch); DirectPred sets W_p."""
        if float(self.batch_rows) == 0:
            return
        batch = all_reduce_mean_(self.batch_corr / self.batch_rows)  # equal batches per rank: the global mean
        first = int(self.steps) == 0
        self.corr.copy_(batch if first else self.rho * self.corr + (1 - self.rho) * batch)
        self.steps.add_(1)
        self.batch_corr.zero_()
        self.batch_rows.zero_()
        if self.kind == "directpred" and (int(self.steps) - 1) % self.freq == 0:
            self.weight.copy_(directpred_weight(self.corr, self.eps))

    def epoch_logs(self) -> dict[str, float]:
        """metrics.csv's predictor_* columns (none before F-hat has seen a step)."""
        if int(self.steps) == 0:
            return {}
        return {f"predictor_{k}": v for k, v in alignment_metrics(self.corr, self.weight.detach()).items()}
