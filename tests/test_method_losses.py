"""Losses and target rules of MoCo v2/v3, DINO, SimCLR and Barlow Twins against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.methods.barlow import barlow_loss, cross_correlation
from ssl_zoo.methods.dino import DINO, dino_loss, teacher_temp_at
from ssl_zoo.methods.mocov2 import MoCoV2, SplitBatchNorm2d, info_nce_queue, split_batchnorm_
from ssl_zoo.methods.mocov3 import MoCoV3, info_nce_in_batch
from ssl_zoo.methods.simclr import nt_xent


def head(out_dim: int = 2, hidden: int = 8, layers: int = 2, **extra) -> dict:
    return {"layers": layers, "hidden_dim": hidden, "out_dim": out_dim, "bn_hidden": False, "bn_out": False,
            "affine": True, "bias": True, **extra}


# --- MoCo v2: InfoNCE against a queue, the ring buffer, split BN, the K check -----------------------------


def test_info_nce_queue_hand_case():
    # q.k+ = 0.6, q.queue = [1, 0]; T = 0.5 -> logits [1.2, 2, 0], positive at index 0. Inputs unnormalised.
    q, k = torch.tensor([[2.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -1.2 + math.log(math.exp(1.2) + math.exp(2.0) + 1.0)
    assert info_nce_queue(q, k, queue, 0.5).item() == pytest.approx(expected, rel=1e-6)


def mocov2(queue_size: int = 6, split_bn: int = 0, symmetric: bool = False) -> MoCoV2:
    cfg = OmegaConf.create({"queue_size": queue_size, "temperature": 0.1, "tau_base": 0.99,
                            "tau_schedule": "constant", "symmetric": symmetric, "split_bn": split_bn,
                            "projector": head()})
    return MoCoV2(nn.Flatten(), 4, cfg)


def test_queue_is_fifo_and_wraps_around():
    m = mocov2(queue_size=6)
    batches = [F.normalize(torch.randn(2, 2), dim=1) for _ in range(4)]
    for b in batches[:3]:
        m.enqueue(b)
    assert torch.equal(m.queue, torch.cat(batches[:3])) and m.queue_ptr.item() == 0
    m.enqueue(batches[3])  # the oldest keys (batch 0) are the ones overwritten
    assert torch.equal(m.queue, torch.cat([batches[3], batches[1], batches[2]])) and m.queue_ptr.item() == 2
    state = m.state_dict()  # the queue and its pointer are checkpointed
    assert torch.equal(state["queue"], m.queue) and state["queue_ptr"].item() == 2


def test_mocov2_step_enqueues_the_keys_of_the_second_view():
    torch.manual_seed(0)
    m = mocov2(queue_size=4)
    v1, v2 = torch.randn(2, 4), torch.randn(2, 4)
    out = m.training_step([v1, v2], 0.0)
    expected = F.normalize(m.target(v2), dim=1)
    out.loss.backward()
    m.after_step(0.0)  # EMA first, then the keys computed in the step go in at the pointer
    assert torch.allclose(m.queue[:2], expected, atol=1e-6) and m.queue_ptr.item() == 2
    assert out.features.shape == (2, 4)


def test_split_batchnorm_uses_interleaved_sub_batches():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    split = SplitBatchNorm2d(bn, 2)
    x = torch.randn(8, 3, 2, 2)
    y = split(x)
    for j in range(2):  # sample i belongs to sub-batch i % 2
        ref = F.batch_norm(x[j::2], None, None, training=True, eps=bn.eps)
        assert torch.allclose(y[j::2], ref, atol=1e-5)
    split.eval()
    bn.load_state_dict(split.state_dict())
    bn.eval()
    assert torch.allclose(split(x), bn(x))
    net = split_batchnorm_(nn.Sequential(nn.Conv2d(1, 3, 1), nn.Sequential(nn.BatchNorm2d(3))), 4)
    assert isinstance(net[1][0], SplitBatchNorm2d) and net[1][0].num_splits == 4


def test_mocov2_keys_are_returned_in_input_order_with_split_bn():
    torch.manual_seed(0)
    m = mocov2(queue_size=8, split_bn=2)
    m.eval()  # plain BN statistics: the shuffle and unshuffle must cancel exactly
    v = torch.randn(8, 4)
    assert torch.allclose(m.keys(v), m.target(v))


@pytest.mark.parametrize("extra,fragment", [
    (["method.queue_size=1000", "trainer.batch_size=256"], "method.queue_size=1000 must be a multiple of the 256 keys"),
    (["method.symmetric=true", "trainer.batch_size=384"], "768 keys"),
    (["method.split_bn=3"], "not divisible by method.split_bn=3"),
])
def test_queue_size_must_fit_the_global_batch(extra, fragment):
    with pytest.raises(UserError, match=fragment) as err:
        load_config(["method=mocov2", "trainer.batch_size=256", *extra])
    assert "\n" not in str(err.value)


def test_default_queue_fits_default_batch():
    load_config(["method=mocov2"])
    load_config(["method=mocov2", "method.symmetric=true"])


# --- MoCo v3 ---------------------------------------------------------------------------------------------


def test_info_nce_in_batch_hand_case():
    # T = 0.25: rows [4, 2.4] (label 0) and [0, 3.2] (label 1); the mean CE is scaled by 2T = 0.5.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    ce = [-4 + math.log(math.exp(4) + math.exp(2.4)), -3.2 + math.log(1 + math.exp(3.2))]
    assert info_nce_in_batch(q, k, 0.25).item() == pytest.approx(sum(ce) / 2 * 0.5, rel=1e-6)
    # The same queries as rank 1's half of a gathered batch: their positives sit at offset 2.
    k_all = torch.cat([torch.tensor([[-1.0, 0.0], [0.0, -1.0]]), k])
    ce = [-4 + math.log(math.exp(-4) + 1 + math.exp(4) + math.exp(2.4)),
          -3.2 + math.log(2 + math.exp(-4) + math.exp(3.2))]
    assert info_nce_in_batch(q, k_all, 0.25, offset=2).item() == pytest.approx(sum(ce) / 2 * 0.5, rel=1e-6)


def test_info_nce_in_batch_per_rank_losses_average_to_the_global_one():
    torch.manual_seed(0)
    q, k = torch.randn(4, 3), torch.randn(4, 3)
    halves = [info_nce_in_batch(q[r * 2:r * 2 + 2], k, 0.2, offset=r * 2) for r in range(2)]
    assert torch.stack(halves).mean().item() == pytest.approx(info_nce_in_batch(q, k, 0.2).item(), rel=1e-6)


def test_mocov3_freezes_a_vits_patch_projection():
    backbone = timm.create_model("vit_tiny_patch16_224", num_classes=0, in_chans=1, img_size=16, patch_size=4,
                                 depth=2)
    dim = backbone.num_features
    cfg = OmegaConf.create({"temperature": 0.2, "tau_base": 0.99, "tau_schedule": "cosine",
                            "freeze_patch_embed": True, "projector": head(8, 16),
                            "predictor": head(8, 16, enabled=True, trainable=True, lr_mult=1.0, fixed_lr=False)})
    m = MoCoV3(backbone, dim, cfg)
    trained = {id(p) for g in m.param_groups() for p in g["params"]}
    assert all(id(p) not in trained for p in backbone.patch_embed.parameters())
    before = backbone.patch_embed.proj.weight.clone()
    opt = torch.optim.SGD([p for g in m.param_groups() for p in g["params"]], lr=0.1)
    out = m.training_step([torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)], 0.0)
    out.loss.backward()
    opt.step()
    m.after_step(0.0)
    assert torch.isfinite(out.loss) and torch.equal(backbone.patch_embed.proj.weight, before)
    with pytest.raises(UserError, match="patch_embed"):
        MoCoV3(nn.Flatten(), 4, cfg)


# --- DINO ------------------------------------------------------------------------------------------------


def test_dino_loss_hand_case():
    ts, tt, c = 0.1, 0.05, torch.tensor([1.0, -1.0])
    l3 = math.log(3)
    # teacher crops: softmax((t - c) / tt) = [.5, .5] and [.75, .25]
    teacher = [(c + torch.tensor([0.0, 0.0])).view(1, 2), (c + torch.tensor([tt * l3, 0.0])).view(1, 2)]
    # student crops: softmax(s / ts) = [.5, .5], [.75, .25], [.25, .75]
    student = [torch.zeros(1, 2), torch.tensor([[ts * l3, 0.0]]), torch.tensor([[0.0, ts * l3]])]
    ce = lambda p, q: -sum(a * math.log(b) for a, b in zip(p, q))  # noqa: E731
    t0, t1 = [0.5, 0.5], [0.75, 0.25]
    s0, s1, s2 = [0.5, 0.5], [0.75, 0.25], [0.25, 0.75]
    # every (teacher, student) pair except the same crop: (0,1), (0,2), (1,0), (1,2)
    expected = (ce(t0, s1) + ce(t0, s2) + ce(t1, s0) + ce(t1, s2)) / 4
    loss, entropy = dino_loss(student, teacher, c, ts, tt)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert entropy.item() == pytest.approx((ce(t0, t0) + ce(t1, t1)) / 2, rel=1e-5)


def test_teacher_temperature_warms_up_linearly():
    # DINO's np.linspace(0.04, 0.07, 30)[epoch]: the final value at epoch 29, constant within an epoch
    assert teacher_temp_at(0.0, 100, 0.04, 0.07, 30) == pytest.approx(0.04)
    assert teacher_temp_at(0.15, 100, 0.04, 0.07, 30) == pytest.approx(0.04 + 0.03 * 15 / 29)
    assert teacher_temp_at(0.155, 100, 0.04, 0.07, 30) == teacher_temp_at(0.15, 100, 0.04, 0.07, 30)
    assert teacher_temp_at(0.29, 100, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temp_at(0.3, 100, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temp_at(0.9, 100, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temp_at(0.5, 2, 0.04, 0.07, 0) == pytest.approx(0.07)  # no warm-up


def dino(centering: bool = True, **extra) -> DINO:
    cfg = OmegaConf.create({"head": head(4, 8, num_prototypes=5), "student_temp": 0.1, "teacher_temp": 0.07,
                            "warmup_teacher_temp": 0.04, "warmup_teacher_temp_epochs": 2.0,
                            "centering": centering, "center_momentum": 0.9, "tau_base": 0.996,
                            "tau_schedule": "cosine", "freeze_last_layer": 1.0, "clip_grad": 0.0, **extra})
    return DINO(nn.Flatten(), 4, cfg, epochs=4)


def dino_views(n_local: int = 2) -> list[torch.Tensor]:
    return [torch.randn(3, 4) for _ in range(2 + n_local)]


def test_dino_centre_is_an_ema_of_the_teacher_mean():
    torch.manual_seed(0)
    m, center = dino(), torch.zeros(5)
    for step in range(3):
        views = dino_views()
        with torch.no_grad():
            teacher_mean = m.teacher(torch.cat(views[:2])).mean(0)
        out = m.training_step(views, step / 10)
        out.loss.backward()
        m.after_step(step / 10)
        center = 0.9 * center + 0.1 * teacher_mean
        assert torch.allclose(m.center, center, atol=1e-6)
    logs = out.logs
    assert set(logs) >= {"teacher_entropy", "kl_teacher_student", "teacher_temp", "tau"}
    assert float(logs["teacher_temp"]) == pytest.approx(0.04)  # epoch 0 of linspace(0.04, 0.07, 2)
    assert float(logs["kl_teacher_student"]) >= -1e-6 and 0 <= float(logs["teacher_entropy"]) <= math.log(5)


def test_dino_without_centering_keeps_a_zero_centre():
    m = dino(centering=False)
    out = m.training_step(dino_views(), 0.0)
    out.loss.backward()
    m.after_step(0.0)
    assert torch.count_nonzero(m.center) == 0


def test_dino_freezes_the_last_layer_then_clips_per_parameter():
    torch.manual_seed(0)
    m = dino(clip_grad=1e-3)
    m.training_step(dino_views(), 0.1).loss.backward()  # epoch 0.4 < freeze_last_layer = 1
    m.before_optimizer_step(0.1)
    assert m.head.last_layer.weight.grad is None
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(g.norm() <= 1e-3 + 1e-9 for g in grads)
    m.zero_grad()
    m.training_step(dino_views(), 0.5).loss.backward()  # epoch 2: the last layer trains
    m.before_optimizer_step(0.5)
    assert m.head.last_layer.weight.grad is not None


def test_dino_embed_returns_the_normalised_bottleneck():
    emb = dino().embed(torch.randn(6, 4))
    assert emb["backbone"].shape == (6, 4) and emb["projector"].shape == (6, 4)
    assert torch.allclose(emb["projector"].norm(dim=1), torch.ones(6), atol=1e-5)


# --- SimCLR ----------------------------------------------------------------------------------------------


def test_nt_xent_hand_case():
    # Two images, identical views, T = 1: each anchor sees its positive at cos 1 and two negatives at cos 0.
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert nt_xent(z, z.clone(), 1.0).item() == pytest.approx(math.log(2 + math.e) - 1, rel=1e-6)


def nt_xent_reference(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n, losses = len(z1), []
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = {j: (z[i] @ z[j]).item() / t for j in range(2 * n) if j != i}
        losses.append(-sims[pos] + math.log(sum(math.exp(s) for s in sims.values())))
    return sum(losses) / len(losses)


def test_nt_xent_matches_the_definition_and_its_gathered_form():
    torch.manual_seed(0)
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    full = nt_xent(z1, z2, 0.5)
    assert full.item() == pytest.approx(nt_xent_reference(z1, z2, 0.5), rel=1e-5)
    # Two "ranks" with 2 images each, negatives gathered: the mean of their losses is the full-batch loss.
    per_rank = [nt_xent(z1[r * 2:r * 2 + 2], z2[r * 2:r * 2 + 2], 0.5, z1, z2, offset=r * 2) for r in range(2)]
    assert torch.stack(per_rank).mean().item() == pytest.approx(full.item(), rel=1e-6)


# --- Barlow Twins ----------------------------------------------------------------------------------------


def test_barlow_on_and_off_diagonal_terms():
    # Every column standardises to +-1: z1 -> [[-1, 1], [1, -1]], z2 -> [[-1, -1], [1, 1]],
    # so C = [[1, 1], [-1, -1]]: on = (1-1)^2 + (1+1)^2 = 4, off = 1 + 1 = 2.
    z1 = torch.tensor([[0.0, 5.0], [2.0, 1.0]])
    z2 = torch.tensor([[1.0, 3.0], [3.0, 3.5]])
    c = cross_correlation(z1, z2)
    assert torch.allclose(c, torch.tensor([[1.0, 1.0], [-1.0, -1.0]]), atol=1e-4)
    loss, on, off = barlow_loss(c, 0.5)
    assert on.item() == pytest.approx(4, abs=1e-3) and off.item() == pytest.approx(2, abs=1e-3)
    assert loss.item() == pytest.approx(4 + 0.5 * 2, abs=1e-3)


def test_barlow_loss_is_zero_for_identical_decorrelated_views():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    loss, on, off = barlow_loss(cross_correlation(z, z, eps=1e-12), 0.0051)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


# --- under two gloo processes: gathered keys, gathered negatives, the all-reduced centre --------------------


def _two_rank_worker(rank: int, store: str) -> None:
    import torch.distributed as dist

    from ssl_zoo.common import distributed as D

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        assert D.is_distributed() and D.world_size() == 2 and D.rank() == rank
        torch.manual_seed(0)  # the same full batch on both ranks; each takes its half
        z1, z2 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
        nt_xent(z1, z2, 0.5).backward()
        mine = slice(2 * rank, 2 * rank + 2)
        l1, l2 = z1.detach()[mine].clone().requires_grad_(), z2.detach()[mine].clone().requires_grad_()
        assert torch.equal(D.all_gather_cat(l1), z1.detach())
        loss = nt_xent(l1, l2, 0.5, D.all_gather_cat(l1, grad=True), D.all_gather_cat(l2, grad=True), 2 * rank)
        loss.backward()
        # DDP averages gradients over the 2 ranks: local grad / 2 is the full-batch gradient of this slice.
        assert torch.allclose(l1.grad / 2, z1.grad[mine], atol=1e-6)
        assert torch.allclose(D.all_reduce_mean_(torch.tensor([float(rank)])), torch.tensor([0.5]))
        m = mocov2(queue_size=8)  # same init (seed) on both ranks; different images per rank
        torch.manual_seed(10 + rank)
        views = [torch.randn(2, 4), torch.randn(2, 4)]
        m.training_step(views, 0.0).loss.backward()
        keys = F.normalize(m.target(views[1]), dim=1).detach()
        m.after_step(0.0)
        assert torch.allclose(m.queue[:4], D.all_gather_cat(keys), atol=1e-6)  # rank 0's keys, then rank 1's
        assert m.queue_ptr.item() == 4
    finally:
        dist.destroy_process_group()


def test_gathered_losses_and_queue_under_two_processes(tmp_path):
    # fork: the children reuse this process's imports (spawn would re-import torch twice: ~30 s on 2 cores)
    mp.start_processes(_two_rank_worker, args=(str(tmp_path / "store"),), nprocs=2, join=True, start_method="fork")
