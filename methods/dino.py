"""DINO (Caron et al. 2021).

Head: MLP -> l2-normalised bottleneck -> weight-normalised linear layer with out_dim outputs (norm fixed to 1).
Loss: for every teacher crop t (the 2 global crops) and student crop s (all crops) with t != s,
cross-entropy of softmax((g_t - c) / T_t) against log_softmax(g_s / T_s), averaged over the pairs; the
teacher temperature T_t follows DINO's per-epoch schedule: linspace(warmup_teacher_temp, teacher_temp,
warmup_teacher_temp_epochs) indexed by the epoch, then teacher_temp.
Target rule: teacher = EMA of student (tau_base -> 1, cosine); centre c <- m c + (1 - m) mean(teacher
outputs), all-reduced over ranks. `centering: false` keeps c = 0; teacher_temp = warmup_teacher_temp =
student_temp removes sharpening. Optimisation: DINO's per-parameter gradient clipping (`clip_grad`, 0 = off)
and the last layer's gradients dropped during the first `freeze_last_layer` epochs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.common.distributed import all_reduce_mean_
from ssl_zoo.models.heads import mlp
from ssl_zoo.models.method import Method, StepOutput


def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor,
              student_temp: float, teacher_temp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mean entropy of the teacher distributions); teacher[i] and student[i] are the same crop."""
    probs = [F.softmax((t.float() - center) / teacher_temp, dim=-1) for t in teacher]
    logps = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student]
    pairs = [-(p * lp).sum(-1).mean() for i, p in enumerate(probs) for j, lp in enumerate(logps) if i != j]
    entropy = torch.stack([-(p * p.clamp_min(1e-12).log()).sum(-1).mean() for p in probs]).mean()
    return torch.stack(pairs).mean(), entropy


def teacher_temp_at(progress: float, epochs: int, warmup_temp: float, temp: float, warmup_epochs: float) -> float:
    """DINO's schedule: np.linspace(warmup_temp, temp, warmup_epochs) indexed by the integer epoch, then temp.
    Constant within an epoch; the last warm-up epoch (warmup_epochs - 1) already uses temp. A fractional
    warmup_epochs counts as the next whole number of epochs (DINO's is an int)."""
    epoch = math.floor(progress * epochs + 1e-9)  # the epoch this step belongs to (float-safe at boundaries)
    warmup = math.ceil(warmup_epochs)
    if epoch >= warmup:
        return temp
    return float(np.linspace(warmup_temp, temp, warmup)[epoch])


class NormedLinear(nn.Module):
    """DINO's last layer: weight_norm(Linear, bias=False) with the norm g fixed to 1."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(nn.init.trunc_normal_(torch.empty(out_dim, in_dim), std=0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    def __init__(self, in_dim: int, cfg):
        super().__init__()
        self.mlp = mlp(in_dim, cfg)  # out_dim of this MLP is the bottleneck
        for m in self.mlp.modules():  # DINO's init: truncated normal (std 0.02), zero bias
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.last_layer = NormedLinear(int(cfg.out_dim), int(cfg.num_prototypes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(h), dim=-1))


def forward_crops(net: nn.Module, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """One forward per run of equal-sized crops (BN statistics over the run, as DINO's multi-crop wrapper)."""
    out, i = [], 0
    while i < len(views):
        j = next((j for j in range(i, len(views)) if views[j].shape != views[i].shape), len(views))
        out += net(torch.cat(views[i:j])).chunk(j - i)
        i = j
    return out


class DINO(Method):
    momentum_pairs = {"teacher": ("backbone", "head")}  # EMA of the student (Method.after_step)

    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__(backbone, feat_dim, cfg, epochs)
        self.head = DINOHead(feat_dim, cfg.head)
        self.make_momentum_targets()
        self.register_buffer("center", torch.zeros(int(cfg.head.num_prototypes)))
        self._teacher_mean: torch.Tensor | None = None

    def teacher_temp(self, progress: float) -> float:
        c = self.cfg
        return teacher_temp_at(progress, self.epochs, float(c.warmup_teacher_temp), float(c.teacher_temp),
                               float(c.warmup_teacher_temp_epochs))

    def training_step(self, views, progress):
        feats = forward_crops(self.backbone, views)
        student = self.head(torch.cat(feats)).chunk(len(views))
        with torch.no_grad():
            teacher = self.teacher(torch.cat(views[:2])).chunk(2)
        center = self.center if self.cfg.centering else torch.zeros_like(self.center)
        t_temp = self.teacher_temp(progress)
        loss, entropy = dino_loss(list(student), list(teacher), center, float(self.cfg.student_temp), t_temp)
        self._teacher_mean = torch.cat(teacher).float().mean(0).detach()
        logs = {"tau": self.tau(progress), "teacher_temp": t_temp, "teacher_entropy": entropy.detach(),
                "kl_teacher_student": (loss - entropy).detach()}  # CE = H(teacher) + KL, averaged over pairs
        return StepOutput(loss, logs, features=feats[0])

    def before_optimizer_step(self, progress):
        clip = float(self.cfg.clip_grad or 0)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if clip > 0 and grads:  # per parameter, as DINO: g <- g * min(1, clip / (|g| + 1e-6))
            scale = [(clip / (n + 1e-6)).clamp(max=1.0) for n in torch._foreach_norm(grads)]
            torch._foreach_mul_(grads, scale)
        if progress * self.epochs < float(self.cfg.freeze_last_layer):
            self.head.last_layer.weight.grad = None

    @torch.no_grad()
    def after_step(self, progress):
        super().after_step(progress)  # the teacher's EMA step
        if self.cfg.centering and self._teacher_mean is not None:
            m = float(self.cfg.center_momentum)
            self.center.mul_(m).add_(all_reduce_mean_(self._teacher_mean), alpha=1 - m)
        self._teacher_mean = None

    @torch.no_grad()
    def embed(self, x):
        """backbone features and, as "projector", the l2-normalised bottleneck (the input of the last layer)."""
        h = self.backbone(x)
        return {"backbone": h, "projector": F.normalize(self.head.mlp(h), dim=-1)}


METHOD = DINO
