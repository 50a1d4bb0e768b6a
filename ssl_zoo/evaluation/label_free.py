"""Label-free representation-quality metrics beyond RankMe: α-ReQ (Agrawal et al., NeurIPS 2022) and LiDAR
(Thilak et al. 2023). Both read only embeddings (rows = samples); METHODS.md states the choices made here.

α-ReQ: the exponent α of a power law λ_i ∝ i^(-α) fitted to the eigenvalues of the feature covariance (least
squares of log λ_i on log i). The paper finds α near 1 best; α grows without bound as the spectrum collapses and
falls towards 0 as it flattens into noise.

LiDAR: n images taken as classes, q augmented views of each. Σ_b is the covariance of the per-image means, Σ_w the
mean within-image covariance plus δI; LiDAR is the effective rank (exp entropy) of Σ_w^(-1/2) Σ_b Σ_w^(-1/2): the
number of directions along which images differ more than their own views do. Whitening by Σ_w makes it blind to
scale: only how the image signal and the view noise share the directions matters.
"""

from __future__ import annotations

import math

import torch

ALPHA_FLOOR = 1e-10  # eigenvalues below this fraction of the largest are numerically zero: left out of the fit
LIDAR_DELTA = 1e-4  # δ: keeps Σ_w invertible (Thilak et al.)
LIDAR_EPS = 1e-8  # ε in p_k = λ_k / Σλ + ε (Thilak et al.)


def _gram_eigenvalues(a: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of aᵀa, descending, from the smaller of aᵀa and aaᵀ (they share their nonzero eigenvalues):
    the cost is that of min(rows, columns), not of a wide head's d x d matrix."""
    gram = a.T @ a if a.shape[1] <= a.shape[0] else a @ a.T
    return torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)


def covariance_spectrum(z: torch.Tensor) -> torch.Tensor:
    """The min(n, d) largest eigenvalues of the (centred, 1/(n-1)) covariance of z, float64, descending: the
    eigenvalues of the smaller Gram matrix of the centred embeddings (0.14 s for 1024 x 2048 on 2 CPU cores, where
    their singular values take 0.49 s). A dimensional collapse shows as a tail that drops by orders of magnitude
    (Jing et al. 2022); spectrum.npy holds it at the end of training."""
    z = z.double() - z.double().mean(dim=0)
    return _gram_eigenvalues(z) / max(len(z) - 1, 1)


def power_law_alpha(eigenvalues: torch.Tensor, max_rank: int | None = None) -> float:
    """α of λ_i ∝ i^(-α) by least squares of log λ on log i over ranks 1..max_rank (eigenvalues descending),
    numerically-zero eigenvalues left out; NaN when fewer than two remain (rank <= 1: nothing to fit)."""
    ev = eigenvalues.double().flatten()[:max_rank]
    if len(ev) == 0 or not ev[0] > 0 or not ev.isfinite().all():
        return float("nan")
    ev = ev[ev > ALPHA_FLOOR * ev[0]]
    if len(ev) < 2:
        return float("nan")
    x = torch.arange(1, len(ev) + 1, dtype=torch.float64).log()
    y = ev.log()
    x, y = x - x.mean(), y - y.mean()
    return -((x * y).sum() / (x * x).sum()).item()


def alpha_req(z: torch.Tensor) -> float:
    """α-ReQ of embeddings z [n, d], fitted over ranks 1..min(n-1, d): a centred covariance of n samples has rank
    n-1 at most, so its n-th eigenvalue is zero whatever the model does."""
    if not z.isfinite().all():
        return float("nan")
    return power_law_alpha(covariance_spectrum(z), min(len(z) - 1, z.shape[1]))


class LidarScatter:
    """The sums LiDAR needs, added one view at a time (rows = the same n images in every view): the per-image
    sums (n x d) and the second moment (d x d), float64. Memory n·d + d², whatever the number of views."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.second: torch.Tensor | None = None
        self.views = 0

    def add(self, z: torch.Tensor) -> None:
        z = z.detach().double().cpu()
        if self.sums is None:
            self.sums, self.second = torch.zeros_like(z), torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64)
        self.sums += z
        self.second += z.T @ z
        self.views += 1

    def value(self, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS) -> float:
        if self.sums is None or self.views < 2 or len(self.sums) < 2 or not self.second.isfinite().all():
            return float("nan")  # no within-image spread with one view, no between-image spread with one image
        n, d = self.sums.shape
        means = self.sums / self.views
        centred = means - means.mean(dim=0)
        within = self.second / (n * self.views) - means.T @ means / n  # mean over images of E[x xᵀ] - μ μᵀ
        within = (within + within.T) / 2 + delta * torch.eye(d, dtype=torch.float64)
        # Σ_w^(-1/2) Σ_b Σ_w^(-1/2) has the eigenvalues of L⁻¹ Σ_b L⁻ᵀ (Σ_w = L Lᵀ, both similar to Σ_w⁻¹ Σ_b),
        # and Σ_b = CᵀC / n with C the centred means: the eigenvalues of AᵀA / n, A = C L⁻ᵀ (n x d)
        chol, info = torch.linalg.cholesky_ex(within)
        if info.item() == 0:
            a = torch.linalg.solve_triangular(chol, centred.T, upper=False).T
        else:  # round-off of huge embeddings outweighs δ: whiten through Σ_w's eigenvectors (A = C V W^(-1/2))
            w, v = torch.linalg.eigh(within)
            a = centred @ v * w.clamp_min(delta).rsqrt()
        lam = _gram_eigenvalues(a) / n
        p = lam / lam.sum().clamp_min(1e-300) + eps
        return math.exp(-(p * p.log()).sum().item())


def lidar(views: list[torch.Tensor]) -> float:
    """LiDAR of q >= 2 views, each [n, d] with row i = image i."""
    scatter = LidarScatter()
    for z in views:
        scatter.add(z)
    return scatter.value()
