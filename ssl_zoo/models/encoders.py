"""Backbones by name: torchvision ResNets (optionally with the CIFAR stem), any timm model, a small CPU CNN.

timm and torchvision are imported when a backbone of theirs is built: checking a config (`ssl-zoo show`, the
size estimate of ssl_zoo/config/footprint.py) builds only what it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ssl_zoo.common.errors import UserError

TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50")  # built by torchvision unless encoder=timm


class SmallCNN(nn.Module):
    """Five 3x3 convs with BN: ~44 MFLOP on a 28x28 image, fast enough to pretrain on two CPU cores."""

    def __init__(self, in_chans: int = 1, width: int = 32):
        super().__init__()
        chans = [in_chans, width, width, 2 * width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            stride = 2 if i in (1, 3) else 1
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def has_convolutions(module: nn.Module) -> bool:
    """Whether the channels-last layout can speed a module up (it has 2-d convolutions)."""
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def _download_failed(what: str, err: Exception, cache: str) -> UserError:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:240]
    return UserError(f"encoder.pretrained=true: cannot get {what} ({type(err).__name__}: {reason}); they download "
                     f"once into {cache} and need a network then, or set encoder.pretrained=false")


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """The Hugging Face hub logs every retry of a failed download: the failure is one line of ours instead."""
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR + 1)
    try:
        yield
    finally:
        hub.setLevel(level)


def _torchvision_resnet(arch: str, in_chans: int, cifar_stem: bool, pretrained: bool = False) -> nn.Module:
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT if pretrained else None
    try:
        net = getattr(torchvision.models, arch)(weights=weights)
    except (OSError, RuntimeError, EOFError, ValueError) as err:  # no network, a bad hash, a truncated file
        raise _download_failed(f"torchvision's ImageNet weights of {arch} ({weights})", err,
                               torch.hub.get_dir()) from err
    if cifar_stem:  # small images: keep resolution in the stem (3x3 stride 1, no max-pool)
        net.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif in_chans != 3:
        rgb = net.conv1.weight.detach()
        net.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        if pretrained:  # grey images: the RGB filters summed over colour, as timm does for in_chans=1
            with torch.no_grad():
                net.conv1.weight.copy_(rgb.sum(dim=1, keepdim=True).expand_as(net.conv1.weight))
    net.fc = nn.Identity()
    return net


def pretrained_problem(cfg) -> str | None:
    """Why encoder.pretrained=true cannot mean what it says for this encoder (None when it can)."""
    if not cfg.get("pretrained", False):
        return None
    if library(cfg) == "ssl_zoo":
        return "encoder.pretrained=true: small_cnn has no pretrained weights; set encoder.pretrained=false"
    if library(cfg) == "torchvision" and cfg.get("cifar_stem"):
        return ("encoder.pretrained=true with encoder.cifar_stem=true: the CIFAR stem replaces the pretrained 7x7 "
                "stem; set one of them to false")
    return None


def library(cfg) -> str:
    """Whose module names the backbone's state_dict uses: torchvision, timm, or ssl_zoo (small_cnn)."""
    if str(cfg.arch) == "small_cnn":
        return "ssl_zoo"
    return "torchvision" if str(cfg.arch) in TORCHVISION_ARCHS and cfg.get("name") != "timm" else "timm"


def timm_kwargs(cfg, in_chans: int, image_size: int) -> dict:
    """timm.create_model keyword arguments of a timm backbone (also written to exported model cards)."""
    kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
    arch = str(cfg.arch)
    if "vit" in arch or "deit" in arch:
        kwargs.update(img_size=image_size, patch_size=int(cfg.get("patch_size", 16)),
                      dynamic_img_size=True)  # multi-crop local views are smaller than image_size
    return kwargs


def _timm_model(arch: str, pretrained: bool, kwargs: dict) -> nn.Module:
    import timm

    try:
        with _quiet_hub():
            return timm.create_model(arch, pretrained=pretrained, **kwargs)
    except OSError as err:  # no network, or the hub has no such weights (URLError and the hub's errors are OSErrors)
        raise _download_failed(f"timm's pretrained weights of {arch}", err, "the Hugging Face cache") from err
    except (RuntimeError, ValueError, TypeError) as err:
        raise UserError(f"cannot build encoder '{arch}': {err} (any name from timm.list_models() works)") from err


def build_encoder(cfg, in_chans: int, image_size: int) -> tuple[nn.Module, int]:
    """Returns the backbone and its feature dimension (found by a forward pass, never hard-coded).
    encoder.pretrained=true starts from the library's ImageNet weights (downloaded once, then cached)."""
    arch = str(cfg.arch)
    pretrained = bool(cfg.get("pretrained", False))
    problem = pretrained_problem(cfg)
    if problem:
        raise UserError(problem)
    if library(cfg) == "ssl_zoo":
        net: nn.Module = SmallCNN(in_chans, int(cfg.width or 32))
    elif library(cfg) == "torchvision":
        net = _torchvision_resnet(arch, in_chans, bool(cfg.cifar_stem), pretrained)
    else:
        net = _timm_model(arch, pretrained, timm_kwargs(cfg, in_chans, image_size))
    net.eval()
    with torch.no_grad():
        feat_dim = net(torch.zeros(2, in_chans, image_size, image_size)).shape[-1]
    net.train()
    return net, int(feat_dim)
