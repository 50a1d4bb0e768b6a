"""MoCo v2 (He et al. 2020; Chen et al. 2020).

Loss: InfoNCE with temperature T: for q = projector(encoder(v1)) and k+ = key projector(key encoder(v2)),
logits [q.k+, q.queue] / T (all l2-normalised), cross-entropy with the positive at logit 0; `symmetric`
adds the (v2, v1) term. Single device: BN is split over `split_bn` sub-batches and the keys reordered
so a key is normalised with other images than its query (the MoCo CIFAR demo's substitute for shuffling BN).
Target rule: key encoder+projector = EMA of the online ones with m (tau_base; constant or cosine); then
the step's keys (gathered from every rank) overwrite the oldest entries of the K-key queue (a ring buffer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.common.distributed import all_gather_cat, expected_world_size
from ssl_zoo.common.errors import UserError
from ssl_zoo.models.heads import mlp
from ssl_zoo.models.method import Method, StepOutput


def info_nce_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of [q.k, q.queue] / T with the positive at index 0; q, k [B, d], queue [K, d]."""
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.float().T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from `num_splits` interleaved sub-batches (sample i is in
    sub-batch i % num_splits); evaluation is plain BN with the averaged running statistics."""

    def __init__(self, bn: nn.BatchNorm2d, num_splits: int):
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        self.load_state_dict(bn.state_dict())
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        n, c, h, w = x.shape
        s = self.num_splits
        mean, var = self.running_mean.repeat(s), self.running_var.repeat(s)
        weight, bias = (self.weight.repeat(s), self.bias.repeat(s)) if self.affine else (None, None)
        out = F.batch_norm(x.reshape(n // s, c * s, h, w), mean, var, weight, bias, True, self.momentum, self.eps)
        self.running_mean.copy_(mean.view(s, c).mean(0))
        self.running_var.copy_(var.view(s, c).mean(0))
        return out.view(n, c, h, w)


def split_batchnorm_(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm2d inside module by a SplitBatchNorm2d (same state_dict keys)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm2d):
            setattr(module, name, SplitBatchNorm2d(child, num_splits))
        else:
            split_batchnorm_(child, num_splits)
    return module


class MoCoV2(Method):
    momentum_pairs = {"target": ("backbone", "projector")}  # the key encoder: EMA of these (after_step)

    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__(backbone, feat_dim, cfg, epochs)
        self.splits = int(cfg.split_bn)
        if self.splits > 1:
            split_batchnorm_(self.backbone, self.splits)
        self.projector = mlp(feat_dim, cfg.projector)
        self.make_momentum_targets()
        dim, size = int(cfg.projector.out_dim), int(cfg.queue_size)
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._keys: torch.Tensor | None = None

    @classmethod
    def check_config(cls, cfg) -> None:
        m, batch = cfg.method, int(cfg.trainer.batch_size)
        procs = expected_world_size()
        per_step = batch * procs * (2 if m.symmetric else 1)
        if int(m.queue_size) <= 0 or int(m.queue_size) % per_step:
            fix = max(per_step, round(int(m.queue_size) / per_step) * per_step)
            raise UserError(f"method.queue_size={m.queue_size} must be a multiple of the {per_step} keys enqueued "
                            f"per step (trainer.batch_size={batch} x {procs} process(es)"
                            f"{' x 2 views, symmetric' if m.symmetric else ''}); e.g. method.queue_size={fix}")
        if int(m.split_bn) > 1 and batch % int(m.split_bn):
            raise UserError(f"trainer.batch_size={batch} is not divisible by method.split_bn={m.split_bn}")

    @torch.no_grad()
    def keys(self, v: torch.Tensor) -> torch.Tensor:
        if self.splits <= 1:
            return self.target(v)
        # Query i normalises with sub-batch i % s, its key with i // (B / s): the two share only 1/s of their
        # images, as after MoCo's random shuffle (the batch order is already random).
        perm = torch.arange(len(v), device=v.device).view(self.splits, -1).T.reshape(-1)
        return self.target(v[perm])[torch.argsort(perm)]

    def training_step(self, views, progress):
        v1, v2 = views[0], views[1]
        h1 = self.backbone(v1)
        q1, k2 = self.projector(h1), self.keys(v2)
        loss, keys = info_nce_queue(q1, k2, self.queue, float(self.cfg.temperature)), [k2]
        if self.cfg.symmetric:
            q2, k1 = self.projector(self.backbone(v2)), self.keys(v1)
            loss, keys = loss + info_nce_queue(q2, k1, self.queue, float(self.cfg.temperature)), [k2, k1]
        self._keys = torch.cat(keys)
        return StepOutput(loss, {"tau": self.tau(progress)}, features=h1)

    @torch.no_grad()
    def after_step(self, progress):
        super().after_step(progress)  # the key encoder's EMA step
        if self._keys is not None:
            self.enqueue(all_gather_cat(F.normalize(self._keys.float(), dim=1)))
            self._keys = None

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """FIFO: keys overwrite the oldest entries, starting at queue_ptr and wrapping at K (no host sync)."""
        idx = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % len(self.queue)
        self.queue.index_copy_(0, idx, keys.to(self.queue.dtype))
        self.queue_ptr.add_(len(keys)).remainder_(len(self.queue))


METHOD = MoCoV2
