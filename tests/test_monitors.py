"""Collapse metrics on constructed embeddings whose answer is known, and the `collapsed` rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ssl_zoo.evaluation import monitors


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_rank_one_embeddings_have_effective_rank_one():
    u, v = torch.randn(2048, 1, generator=_gen(0)), torch.randn(1, 64, generator=_gen(1))
    assert monitors.effective_rank(u @ v) == pytest.approx(1.0, abs=1e-2)
    assert monitors.effective_rank(torch.ones(512, 32)) == pytest.approx(1.0, abs=1e-2)  # complete collapse


def test_effective_rank_of_k_equal_directions_is_k():
    # 8 orthogonal directions with equal energy: singular values all equal -> exp(log 8) = 8
    z = torch.zeros(800, 64)
    for k in range(8):
        z[k * 100:(k + 1) * 100, k] = 1.0
    assert monitors.effective_rank(z) == pytest.approx(8.0, rel=1e-3)


def test_isotropic_gaussian_z_std_is_one_over_sqrt_d():
    for d in (16, 128):
        z = torch.randn(8192, d, generator=_gen(d))
        assert monitors.z_std(z) == pytest.approx(1 / math.sqrt(d), rel=0.02)
        assert monitors.effective_rank(z) > 0.9 * d


def test_collapsed_embeddings_have_z_std_zero():
    z = torch.randn(1, 64, generator=_gen(2)).expand(1024, 64) + 1e-6 * torch.randn(1024, 64, generator=_gen(3))
    assert monitors.z_std(z) < 1e-4


def test_covariance_spectrum_recovers_known_variances():
    scales = torch.tensor([4.0, 2.0, 1.0, 0.5])
    z = torch.randn(20000, 4, generator=_gen(4)) * scales + 3.0  # the mean must not matter
    spec = monitors.covariance_spectrum(z)
    assert torch.allclose(spec.float(), scales.pow(2), rtol=0.05)
    assert torch.all(spec[:-1] >= spec[1:])


def test_dino_logged_teacher_entropy_and_kl():
    """What reaches metrics.csv for DINO (teacher_entropy, kl_teacher_student = CE - H): uniform teacher -> log K,
    one-hot teacher -> 0, KL(teacher||student) hand-computed, and 0 when the student matches the teacher."""
    from ssl_zoo.methods.dino import dino_loss

    k = 4096
    zeros = [torch.zeros(8, k), torch.zeros(8, k)]
    loss, entropy = dino_loss(zeros, zeros, torch.zeros(k), 0.1, 0.04)
    assert entropy.item() == pytest.approx(math.log(k), rel=1e-5)
    assert (loss - entropy).item() == pytest.approx(0.0, abs=1e-4)  # KL of identical distributions
    peaked = [torch.zeros(8, k).index_fill_(1, torch.tensor([3]), 50.0)] * 2
    assert dino_loss(zeros, peaked, torch.zeros(k), 0.1, 0.04)[1].item() == pytest.approx(0.0, abs=1e-6)
    t, s = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[math.log(9.0), 0.0]])  # p = (1/4, 3/4), q = (9/10, 1/10)
    loss, entropy = dino_loss([s, s], [t, t], torch.zeros(2), 1.0, 1.0)
    p, q = (0.25, 0.75), (0.9, 0.1)
    assert (loss - entropy).item() == pytest.approx(sum(a * math.log(a / b) for a, b in zip(p, q)), rel=1e-5)


def test_dino_step_logs_the_keys_the_collapse_rule_reads():
    from ssl_zoo.config.load import load_config
    from ssl_zoo.train.build import build_method

    cfg = load_config(["method=dino", "data=digits", "encoder.width=4", "method.head.hidden_dim=32",
                       "method.head.num_prototypes=64"])
    method = build_method(cfg)
    views = [torch.randn(4, 1, 16, 16)] * 2 + [torch.randn(4, 1, 8, 8)] * 2
    logs = method.training_step(views, 0.0).logs
    assert {"teacher_entropy", "kl_teacher_student"} <= set(logs)
    assert 0 <= float(logs["teacher_entropy"]) <= math.log(64) + 1e-4


def test_alignment_and_uniformity():
    z = torch.randn(1024, 64, generator=_gen(5))
    assert monitors.alignment(z, 3 * z) == pytest.approx(0.0, abs=1e-6)  # scale-free: normalised first
    assert monitors.alignment(z, -z) == pytest.approx(4.0, rel=1e-5)  # antipodal views: |x - y|^2 = 4
    # points uniform on the sphere in d dims: x.y ~ N(0, 1/d), so log E exp(-2|x-y|^2) ~ -4 + 8/d
    assert monitors.uniformity(z) == pytest.approx(-4 + 8 / 64, abs=0.03)
    assert monitors.uniformity(torch.ones(64, 8)) == pytest.approx(0.0, abs=1e-6)  # one point: worst


class _Fixed(nn.Module):
    """A stand-in method whose embeddings are given: backbone collapsed to a line, projector isotropic."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    @torch.no_grad()
    def embed(self, x):
        assert not self.training, "collapse metrics are measured in eval mode"
        return {"backbone": x[:, :1] * torch.ones(1, 32), "projector": x}


def test_collapse_metrics_reads_backbone_and_projector_and_restores_train_mode():
    x = torch.randn(4096, 64, generator=_gen(6))
    method = _Fixed().train()
    out = monitors.collapse_metrics(method, x, [x, x + 0.01 * torch.randn(4096, 64, generator=_gen(7))])
    assert method.training
    assert out["z_std"] == pytest.approx(1 / 8, rel=0.03) and out["z_std_ref"] == pytest.approx(1 / 8)
    assert out["backbone_effective_rank"] == pytest.approx(1.0, abs=1e-2)
    assert out["backbone_z_std_ref"] == pytest.approx(1 / math.sqrt(32))
    assert out["alignment"] < 1e-3 and out["uniformity"] < -3.5
    # a line through the origin normalises to two antipodal points: half the pairs at distance 0 -> log(1/2)
    assert out["backbone_uniformity"] == pytest.approx(math.log(0.5), abs=0.02)


def test_save_spectra_writes_the_covariance_spectrum(tmp_path):
    x = torch.randn(512, 16, generator=_gen(8))
    monitors.save_spectra(tmp_path, _Fixed(), x)
    spec = np.load(tmp_path / "spectrum.npy")
    assert np.allclose(spec, monitors.covariance_spectrum(x).numpy())
    assert np.load(tmp_path / "spectrum_backbone.npy")[1] < 1e-10 * spec[0]  # rank one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spectrum.npy", "spectrum_backbone.npy"]


@pytest.mark.parametrize("final, k, expected", [
    ({"z_std": 0.12, "z_std_ref": 0.125, "effective_rank": 40.0}, None, False),
    ({"z_std": 0.02, "z_std_ref": 0.125, "effective_rank": 40.0}, None, True),  # below 0.2/sqrt(d)
    ({"z_std": 0.12, "z_std_ref": 0.125, "effective_rank": 1.5}, None, True),
    ({"z_std": 0.12, "z_std_ref": 0.125, "effective_rank": 40.0, "teacher_entropy": 0.05 * math.log(1024)}, 1024, True),
    ({"z_std": 0.12, "z_std_ref": 0.125, "effective_rank": 40.0, "teacher_entropy": 0.99 * math.log(1024)}, 1024, True),
    ({"z_std": 0.12, "z_std_ref": 0.125, "effective_rank": 40.0, "teacher_entropy": 0.5 * math.log(1024)}, 1024, False),
    ({"z_std": float("nan"), "z_std_ref": 0.125}, None, False),
])
def test_collapse_verdict(final, k, expected):
    collapsed, why = monitors.collapse_verdict(final, k)
    assert collapsed is expected
    assert bool(why) is expected
