"""Optimizers (SGD, LARS from timm, AdamW) and the per-step LR schedule: linear warmup, then cosine."""

from __future__ import annotations

import math

import torch


def build_optimizer(groups: list[dict], cfg) -> torch.optim.Optimizer:
    """Splits every method group into decay / no-decay halves (BN and bias get no weight decay, and LARS
    skips its trust ratio for them); a group's weight_decay_mult scales its decay (a predictor's own)."""
    param_groups = []
    for group in groups:
        extra = {"lr_mult": group.get("lr_mult", 1.0), "fixed_lr": group.get("fixed_lr", False)}
        decay = [p for p in group["params"] if p.ndim > 1]
        no_decay = [p for p in group["params"] if p.ndim <= 1]
        wd = float(cfg.weight_decay) * float(group.get("weight_decay_mult", 1.0))
        param_groups += [{"params": decay, "weight_decay": wd, **extra},
                         {"params": no_decay, "weight_decay": 0.0, **extra}]
    param_groups = [g for g in param_groups if g["params"]]
    lr = float(cfg.lr)
    cuda = any(p.is_cuda for g in param_groups for p in g["params"])
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=float(cfg.momentum), foreach=True)
    if cfg.optimizer == "lars":
        from timm.optim import Lars  # late: importing timm costs seconds at every start

        return Lars(param_groups, lr=lr, momentum=float(cfg.momentum))
    return torch.optim.AdamW(param_groups, lr=lr, betas=tuple(cfg.betas), fused=cuda or None)


def peak_lr(cfg, global_batch: int) -> float:
    scale = global_batch / 256 if cfg.lr_scaling == "linear" else 1.0
    return float(cfg.lr) * scale


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, min_lr: float) -> float:
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (peak - min_lr) * (1 + math.cos(math.pi * progress)) / 2


def set_lr(optimizer: torch.optim.Optimizer, lr: float, peak: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = (peak if group["fixed_lr"] else lr) * group["lr_mult"]
