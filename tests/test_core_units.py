"""Unit tests of the core pieces: losses, EMA, momentum schedule, head toggles, encoders, schedules."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ssl_zoo.common.shown import shown
from ssl_zoo.config.load import load_config
from ssl_zoo.methods.byol import byol_loss
from ssl_zoo.methods.simsiam import simsiam_loss
from ssl_zoo.models.encoders import build_encoder
from ssl_zoo.models.heads import mlp
from ssl_zoo.models.method import method_class
from ssl_zoo.models.targets import ema_update, make_momentum_targets, momentum_at, update_momentum_targets
from ssl_zoo.train.optim import lr_at


def test_byol_loss_hand_computed():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[1.0, 1.0], [0.0, -3.0]])
    # cos = 1/sqrt(2) and -1 -> losses 2 - sqrt(2) and 4
    assert byol_loss(p, z).item() == pytest.approx(((2 - math.sqrt(2)) + 4) / 2, abs=1e-6)


def test_simsiam_loss_hand_computed():
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    z = torch.tensor([[4.0, 3.0], [0.0, 1.0]])
    assert simsiam_loss(p, z).item() == pytest.approx(-(24 / 25 + 0) / 2, abs=1e-6)


def test_ema_update_lerps_parameters_and_copies_buffers():
    online, target = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        online.weight.fill_(1.0)
        target.weight.fill_(0.0)
        online.running_mean.fill_(5.0)
    ema_update(target, online, tau=0.9)
    assert torch.allclose(target.weight, torch.full((3,), 0.1))
    assert torch.equal(target.running_mean, online.running_mean)
    ema_update(target, online, tau=1.0)  # frozen target
    assert torch.allclose(target.weight, torch.full((3,), 0.1))
    ema_update(target, online, tau=0.0)  # target = online
    assert torch.equal(target.weight, online.weight)


def test_tau_schedule_start_middle_end():
    assert momentum_at(0.996, 0.0) == pytest.approx(0.996)
    assert momentum_at(0.996, 0.5) == pytest.approx(0.998)
    assert momentum_at(0.996, 1.0) == pytest.approx(1.0)
    assert momentum_at(0.99, 0.7, "constant") == 0.99


def test_momentum_targets_are_frozen_copies_that_follow_their_pairs():
    owner = nn.Module()
    owner.backbone, owner.projector = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Linear(4, 2)
    pairs = {"target": ("backbone", "projector")}
    make_momentum_targets(owner, pairs)
    assert set(owner.target.state_dict()) == ({f"0.{k}" for k in owner.backbone.state_dict()}
                                              | {f"1.{k}" for k in owner.projector.state_dict()})
    assert not any(p.requires_grad for p in owner.target.parameters())
    before = [p.clone() for p in owner.target.parameters()]
    with torch.no_grad():
        for p in [*owner.backbone.parameters(), *owner.projector.parameters()]:
            p.add_(1.0)
        owner.backbone[1].running_mean.fill_(2.0)
    update_momentum_targets(owner, pairs, tau=0.75)
    online = [*owner.backbone.parameters(), *owner.projector.parameters()]
    for t, b, o in zip(owner.target.parameters(), before, online):
        assert torch.allclose(t, 0.75 * b + 0.25 * o)
    assert torch.equal(owner.target[0][1].running_mean, owner.backbone[1].running_mean)


# The target copies' state_dict keys are what checkpoints hold: <target>.<i>.<key of the i-th online module>.
CHECKPOINTED_PAIRS = {"byol": {"target": ("backbone", "projector")}, "mocov2": {"target": ("backbone", "projector")},
                      "mocov3": {"target": ("backbone", "projector")}, "dino": {"teacher": ("backbone", "head")}}


@pytest.mark.parametrize("name", ["barlow", "byol", "dino", "mocov2", "mocov3", "simclr", "simsiam", "swav", "vicreg"])
def test_momentum_methods_keep_their_checkpoint_keys(name):
    cfg = OmegaConf.to_container(load_config([f"method={name}"]).method)
    for part in ("projector", "predictor", "head"):
        if part in cfg:
            cfg[part].update(hidden_dim=8, out_dim=8, **({"num_prototypes": 8} if part == "head" else {}))
    cfg.update({"num_prototypes": 8, "queue_length": 4} if name == "swav" else {})
    cfg.update({"queue_size": 8} if name == "mocov2" else {})
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    method = method_class(name)(backbone, 4, OmegaConf.create(cfg))
    pairs = CHECKPOINTED_PAIRS.get(name, {})
    assert method.momentum_pairs == pairs
    keys = set(method.state_dict())
    for target, online in pairs.items():
        expected = {f"{target}.{i}.{k}" for i, part in enumerate(online) for k in getattr(method, part).state_dict()}
        assert {k for k in keys if k.startswith(f"{target}.")} == expected
    method.after_step(0.5)  # the EMA step (or nothing) of the default target rule


def test_shown_writes_values_as_the_user_wrote_them():
    assert [shown(v) for v in (None, True, "a b", 0.5, OmegaConf.create([1, False]))] == \
        ["null", "true", "'a b'", "0.5", "[1, false]"]
    assert [shown(v, "json") for v in (None, True, "high", [1], 0.1)] == ["null", "true", '"high"', "[1]", "0.1"]
    assert shown(list(range(20)), "json") == "[0, 1, 2, 3, 4, 5, 6, 7, 8,..."  # 30 characters at most


def _head(**kw):
    base = {"layers": 2, "hidden_dim": 16, "out_dim": 8, "bn_hidden": True, "bn_out": False, "affine": True,
            "bias": True}
    return OmegaConf.create({**base, **kw})


@pytest.mark.parametrize("bn_hidden,bn_out,affine", [(True, False, True), (False, False, True),
                                                    (True, True, False), (False, True, True)])
def test_head_bn_toggles_build_the_layers_asked_for(bn_hidden, bn_out, affine):
    head = mlp(4, _head(layers=3, bn_hidden=bn_hidden, bn_out=bn_out, affine=affine))
    bns = [m for m in head if isinstance(m, nn.BatchNorm1d)]
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    assert len(bns) == 2 * bn_hidden + bn_out
    assert all(bn.affine == affine for bn in bns)
    assert isinstance(head[-1], nn.BatchNorm1d) == bn_out
    assert [lin.bias is not None for lin in linears] == [not bn_hidden, not bn_hidden, not bn_out]
    assert head(torch.randn(5, 4)).shape == (5, 8)


def test_head_bias_off():
    head = mlp(4, _head(bn_hidden=False, bias=False))
    assert all(m.bias is None for m in head if isinstance(m, nn.Linear))


@pytest.mark.parametrize("arch,extra,chans,size", [("small_cnn", {"width": 8}, 1, 16),
                                                   ("resnet18", {"cifar_stem": True}, 3, 32),
                                                   ("resnet18", {}, 1, 32)])
def test_encoders_discover_feature_dim(arch, extra, chans, size):
    cfg = OmegaConf.create({"name": arch, "arch": arch, "width": None, "cifar_stem": False, **extra})
    net, dim = build_encoder(cfg, chans, size)
    assert net(torch.randn(2, chans, size, size)).shape == (2, dim)
    if extra.get("cifar_stem"):
        assert net.conv1.stride == (1, 1) and isinstance(net.maxpool, nn.Identity)


def test_timm_encoder_by_name():
    cfg = OmegaConf.create({"name": "timm", "arch": "resnet10t", "width": None, "cifar_stem": False})
    net, dim = build_encoder(cfg, 1, 32)
    assert dim == 512 and net(torch.randn(2, 1, 32, 32)).shape == (2, 512)


def test_lr_warmup_then_cosine():
    assert lr_at(0, 100, 10, 1.0, 0.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_vit_encoder_takes_multicrop_local_views():
    cfg = OmegaConf.create({"name": "vit_tiny", "arch": "vit_tiny_patch16_224", "width": None, "cifar_stem": False,
                            "patch_size": 4})
    net, dim = build_encoder(cfg, 1, 16)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, dim)  # a local crop half the image size
