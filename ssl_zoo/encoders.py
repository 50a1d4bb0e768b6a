"""Backbones by name: torchvision ResNets (optionally with the CIFAR stem), any timm model, a small CPU CNN."""

from __future__ import annotations

import timm
import torch
import torchvision
from torch import nn

from ssl_zoo.errors import UserError


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


def _torchvision_resnet(arch: str, in_chans: int, cifar_stem: bool) -> nn.Module:
    net = getattr(torchvision.models, arch)(weights=None)
    if cifar_stem:  # small images: keep resolution in the stem (3x3 stride 1, no max-pool)
        net.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif in_chans != 3:
        net.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
    net.fc = nn.Identity()
    return net


def library(cfg) -> str:
    """Whose module names the backbone's state_dict uses: torchvision, timm, or ssl_zoo (small_cnn)."""
    if str(cfg.arch) == "small_cnn":
        return "ssl_zoo"
    return "torchvision" if str(cfg.arch) in ("resnet18", "resnet34", "resnet50") and cfg.get("name") != "timm" else "timm"


def timm_kwargs(cfg, in_chans: int, image_size: int) -> dict:
    """timm.create_model keyword arguments of a timm backbone (also written to exported model cards)."""
    kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
    arch = str(cfg.arch)
    if "vit" in arch or "deit" in arch:
        kwargs.update(img_size=image_size, patch_size=int(cfg.get("patch_size", 16)),
                      dynamic_img_size=True)  # multi-crop local views are smaller than image_size
    return kwargs


def build_encoder(cfg, in_chans: int, image_size: int) -> tuple[nn.Module, int]:
    """Returns the backbone and its feature dimension (found by a forward pass, never hard-coded)."""
    arch = str(cfg.arch)
    if library(cfg) == "ssl_zoo":
        net: nn.Module = SmallCNN(in_chans, int(cfg.width or 32))
    elif library(cfg) == "torchvision":
        net = _torchvision_resnet(arch, in_chans, bool(cfg.cifar_stem))
    else:
        kwargs = timm_kwargs(cfg, in_chans, image_size)
        try:
            net = timm.create_model(arch, pretrained=bool(cfg.get("pretrained", False)), **kwargs)
        except (RuntimeError, ValueError, TypeError) as err:
            raise UserError(f"cannot build encoder '{arch}': {err} (any name from timm.list_models() works)") from err
    net.eval()
    with torch.no_grad():
        feat_dim = net(torch.zeros(2, in_chans, image_size, image_size)).shape[-1]
    net.train()
    return net, int(feat_dim)
