"""What the trainer needs to train one run on several processes (DDP) exactly as one process would.

With `trainer.batch_size` B per process and W processes, every step uses the GLOBAL batch of the W*B images a
single process with batch W*B would use: rank r takes slice r of it, draws the augmentation parameters of all W*B
samples from the step's generator and keeps its own rows, so every image gets the view it gets in a
single-process run. Gradients are averaged by DDP (the mean over ranks of per-rank batch means = the global mean);
with SyncBN (`launcher.sync_bn=true`) batch statistics are global too and the run matches the single-process run
up to float summation order.
"""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ssl_zoo.data.views import NUM_UNIFORMS, ViewMaker, apply_recipe
from ssl_zoo.models.method import Method, StepOutput

_DDP_ARGS = inspect.signature(DistributedDataParallel).parameters


class _Step(nn.Module):
    """DDP hooks its gradient all-reduce into forward(): route the method's training_step through it."""

    def __init__(self, method: Method):
        super().__init__()
        self.method = method

    def forward(self, views: list[torch.Tensor], progress: float) -> StepOutput:
        return self.method.training_step(views, progress)


def wrap(method: Method, device: torch.device) -> nn.Module:
    """The method's training step as a DDP module. Buffers are not broadcast each step: BN statistics are per
    rank (or global with SyncBN) and queues/centres are kept equal by the methods' own gathers."""
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_ARGS  # torch >= 2.13 name
               else {"broadcast_buffers": False})
    return DistributedDataParallel(_Step(method), device_ids=[device.index] if device.type == "cuda" else None,
                                   **no_sync)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the gradients (each rank's loss depends on every
    rank's inputs through the shared statistics)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """torch's SyncBatchNorm runs only on accelerators (and DDP refuses it on CPU modules); on CPU (gloo) the
    global batch statistics come from one differentiable all-reduce of per-channel sums, so gradients flow to
    every rank's inputs as in one process. Evaluation uses the running statistics, as BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = x.new_full((1,), x.numel() // c)
        total = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _cpu_sync(module: nn.Module) -> nn.Module:
    """convert_sync_batchnorm's walk with CpuSyncBatchNorm: same parameters and buffers, new forward."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _cpu_sync(child))
    return out


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of the module (online and target sides) computes statistics over the global batch."""
    if device.type == "cpu":
        return _cpu_sync(module)
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def shard_views(maker: ViewMaker, x: torch.Tensor, generator: torch.Generator, rank: int, world: int):
    """This rank's rows of the views a single process makes for the global batch (x is this rank's slice r of
    it): the uniforms of all world*B samples are drawn (cheap), only the local B images are transformed."""
    if world == 1:
        return maker(x, generator)
    cropped = not isinstance(x, torch.Tensor)  # streaming: per-recipe crops made by the data workers
    xf = x if cropped else x.float() / 255
    device = x[0].device if cropped else x.device
    mean, std = maker._mean_std(device)
    views: list[torch.Tensor] = []
    for k, r in enumerate(maker.recipes):
        xr = maker.recipe_input(xf, k)
        b = xr.shape[0] // r.n
        # Global draw order: recipe r's n crops of the whole global batch, [crop, rank, sample] row-major.
        u = torch.rand(r.n * world * b, NUM_UNIFORMS, generator=generator, device=device)
        u = u.view(r.n, world, b, NUM_UNIFORMS)[:, rank].reshape(r.n * b, NUM_UNIFORMS)
        out, _ = apply_recipe(xr, r, u, cropped)
        views += ((out - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).chunk(r.n)
    return views


class StopVote:
    """Ranks must stop at the same step (a rank that stops early leaves the others waiting in an all-reduce).
    Each step every rank contributes its stop code; the maximum wins. The vote goes through a gloo group on the
    CPU so it never waits on the GPU stream."""

    def __init__(self):
        self.group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def __call__(self, code: int) -> int:
        t = torch.tensor([code], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return int(t.item())


def average_grads_(params) -> None:
    """Mean of the gradients over ranks, in place (the online probe trains outside DDP)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
