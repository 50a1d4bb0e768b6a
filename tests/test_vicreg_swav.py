"""VICReg and SwAV against transcriptions of their official implementations (facebookresearch/vicreg main.py,
facebookresearch/swav main_swav.py, single process) on random tensors: values and gradients; SwAV's queue and
prototype rules (their collapse ablations: tests/test_collapse_direction.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_zoo.config.load import load_config
from ssl_zoo.methods.swav import sinkhorn, swapped_prediction
from ssl_zoo.methods.vicreg import vicreg_terms
from ssl_zoo.train.build import build_method


def official_vicreg(x, y, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
    def off_diagonal(m):
        n = m.shape[0]
        return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()

    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    cov_loss = off_diagonal(cov_x).pow_(2).sum().div(num_features) + off_diagonal(cov_y).pow_(2).sum().div(
        num_features)
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


def official_sinkhorn(out, epsilon=0.05, iterations=3):
    q = torch.exp(out / epsilon).t()
    b, k = q.shape[1], q.shape[0]
    q /= torch.sum(q)
    for _ in range(iterations):
        q /= torch.sum(q, dim=1, keepdim=True)
        q /= k
        q /= torch.sum(q, dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


@pytest.mark.parametrize("scale", [0.1, 3.0])  # low variance (hinge active) and high variance (hinge off)
def test_vicreg_loss_matches_the_official_code(scale):
    g = torch.Generator().manual_seed(0)
    z1 = (scale * torch.randn(64, 32, generator=g)).requires_grad_()
    z2 = (z1.detach() + 0.5 * torch.randn(64, 32, generator=g)).requires_grad_()
    inv, var, cov = vicreg_terms(z1, z2)
    ours = 25 * inv + 25 * var + 1 * cov
    a1, a2 = z1.detach().clone().requires_grad_(), z2.detach().clone().requires_grad_()
    ref = official_vicreg(a1, a2)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(z1.grad, a1.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(z2.grad, a2.grad, rtol=1e-4, atol=1e-7)


def test_vicreg_terms_are_zero_where_the_paper_says():
    z = torch.randn(256, 8) * 2  # std > 1 in every dimension: no variance penalty; identical views: no invariance
    inv, var, _ = vicreg_terms(z, z.clone())
    assert inv == 0 and var == 0
    _, _, cov = vicreg_terms(torch.eye(8).repeat(32, 1), torch.eye(8).repeat(32, 1))
    assert cov > 0  # one-hot rows are negatively correlated


def test_sinkhorn_matches_the_official_code_and_equipartitions():
    scores = F.normalize(torch.randn(96, 16), dim=1) @ F.normalize(torch.randn(40, 16), dim=1).T
    q = sinkhorn(scores, 0.05, 3)
    torch.testing.assert_close(q, official_sinkhorn(scores.clone()), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(q.sum(1), torch.ones(96), rtol=1e-5, atol=1e-5)  # a distribution per image
    many = sinkhorn(scores, 0.05, 50)  # converged: every prototype gets batch / K of the mass
    torch.testing.assert_close(many.sum(0), torch.full((40,), 96 / 40), rtol=1e-3, atol=1e-3)


def test_swapped_prediction_matches_the_official_loop():
    g = torch.Generator().manual_seed(1)
    bs, k, crops, temperature = 16, 24, 4, 0.1
    output = torch.randn(bs * crops, k, generator=g, requires_grad=True)
    scores = list(output.chunk(crops))
    codes = [official_sinkhorn(s.detach().clone()) for s in scores[:2]]
    ours = swapped_prediction(scores, codes, temperature)
    ref = 0
    for i, crop_id in enumerate([0, 1]):
        q = codes[i]
        subloss = 0
        for v in [v for v in range(crops) if v != crop_id]:
            x = output[bs * v: bs * (v + 1)] / temperature
            subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        ref += subloss / (crops - 1)
    ref /= 2
    torch.testing.assert_close(ours, ref)
    (g_ours,) = torch.autograd.grad(ours, output)
    (g_ref,) = torch.autograd.grad(ref, output)
    torch.testing.assert_close(g_ours, g_ref)


def _swav(*extra: str):
    cfg = load_config(["method=swav", "trainer.epochs=1", "encoder.width=8", "method.projector.hidden_dim=32",
                       "method.projector.out_dim=16", "method.num_prototypes=24", "views.crops.local.n=2", *extra])
    return build_method(cfg)


def _step(m, progress: float, batch: int = 8):
    g = torch.Generator().manual_seed(int(progress * 1000))
    views = [torch.randn(batch, 1, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(batch, 1, 8, 8, generator=g) for _ in range(2)]
    out = m.training_step(views, progress)
    out.loss.backward()
    m.before_optimizer_step(progress)
    m.after_step(progress)
    return out


def test_swav_queue_is_a_fifo_used_once_full_and_after_its_start():
    m = _swav("method.queue_length=16", "method.queue_start_epoch=0.5")
    used = []
    original = m._codes
    m._codes = lambda s, crop, use_queue: used.append(use_queue) or original(s, crop, use_queue)
    for step in range(4):
        m.zero_grad()
        _step(m, progress=0.2 * step)  # epochs = 1: the queue starts at progress 0.5
        if step == 2:
            newest = m.queue[:, :8].clone()
    assert int(m.queue_filled) == 32
    assert used == [False, False, False, False, False, False, True, True]  # full after 2 steps, used from 0.6
    torch.testing.assert_close(m.queue[:, 8:16], newest)  # one step later the step-2 rows moved back by 8


def test_swav_prototypes_are_normalised_and_frozen_in_the_first_epoch():
    m = _swav("method.queue_length=0", "method.freeze_prototypes_epochs=0.5")
    m.zero_grad()
    _step(m, progress=0.1)
    assert m.prototypes.weight.grad is None  # frozen
    m.zero_grad()
    _step(m, progress=0.6)
    assert m.prototypes.weight.grad is not None
    torch.testing.assert_close(m.prototypes.weight.norm(dim=1), torch.ones(24))


def test_swav_without_sinkhorn_uses_softmax_codes():
    m = _swav("ablation=no_sinkhorn", "method.queue_length=0")
    scores = torch.randn(8, 24)
    torch.testing.assert_close(m._codes(scores, 0, False), F.softmax(scores / 0.05, dim=1))
