"""Target-side helpers shared by methods: momentum (EMA) copies of online modules, their update, tau schedules."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

# A method's momentum pairs: each target attribute and the online attributes it is an EMA copy of, in order
# (BYOL: {"target": ("backbone", "projector")}).
MomentumPairs = dict[str, tuple[str, ...]]


def frozen_copy(module: nn.Module) -> nn.Module:
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def momentum_at(base: float, progress: float, schedule: str = "cosine", final: float = 1.0) -> float:
    """BYOL's tau = 1 - (1 - base) * (cos(pi * progress) + 1) / 2 (cosine: base -> final), or constant base."""
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"unknown momentum schedule '{schedule}' (cosine, constant)")
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, for parameters; buffers (BN statistics) are copied."""
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    if tau == 1.0:
        pass
    elif tau == 0.0:
        torch._foreach_copy_(t_params, o_params)
    else:
        torch._foreach_lerp_(t_params, o_params, 1.0 - tau)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)


def _chained(owner: nn.Module, names: tuple[str, ...]) -> nn.Sequential:
    # Looked up by name at every call: the update follows whatever module the attribute holds now.
    return nn.Sequential(*(getattr(owner, name) for name in names))


def make_momentum_targets(owner: nn.Module, pairs: MomentumPairs) -> None:
    """Set each target attribute to a frozen copy of its online modules chained in an nn.Sequential, so that its
    state_dict keys are <target>.<i>.<key of the i-th online module> (the layout checkpoints hold)."""
    for target, online in pairs.items():
        setattr(owner, target, frozen_copy(_chained(owner, online)))


@torch.no_grad()
def update_momentum_targets(owner: nn.Module, pairs: MomentumPairs, tau: float) -> None:
    """One EMA step of every target towards its online modules."""
    for target, online in pairs.items():
        ema_update(getattr(owner, target), _chained(owner, online), tau)
