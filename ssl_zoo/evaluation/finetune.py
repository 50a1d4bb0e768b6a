"""Fine-tuning the whole pretrained network, on all labels or on a small labelled subset (eval.protocol=finetune).

The semi-supervised protocol of SimCLR and BYOL: a fixed, seeded, class-balanced 1% / 10% of the training labels
(the same subset for every run of a comparison: its seed is eval.finetune.subset_seed, not the run's seed),
the backbone and a new linear classifier trained together with the standard supervised augmentation
(RandomResizedCrop + horizontal flip), SGD with Nesterov momentum and a cosine schedule, then top-1 / top-5 on the
test split with the evaluation transform. The pretrained method is never modified (the backbone is copied).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from ssl_zoo.common.errors import UserError
from ssl_zoo.data.in_memory import ImageData
from ssl_zoo.data.source import DataSource
from ssl_zoo.data.views import plain_view, random_resized_crop_flip
from ssl_zoo.evaluation.probes import topk_accuracy
from ssl_zoo.runs.label_subsets import write_label_subset


def check_data(cfg: DictConfig) -> None:
    """Fine-tuning reads the labelled images as one in-memory tensor: streamed datasets are refused up front.
    (Fine-tuning a streamed ImageNet is a supervised training run of its own, with its own schedule, resumption
    and multi-GPU needs; the frozen-backbone linear evaluation, eval.protocol=sgd, streams.)"""
    from ssl_zoo.data.datasets import STREAMABLE

    if cfg.eval.protocol == "finetune" and cfg.data.name in STREAMABLE and cfg.data.get("stream", True):
        raise UserError(f"eval.protocol=finetune needs data={cfg.data.name} in memory: add data.stream=false "
                        "(small folders), or evaluate streamed data with eval.protocol=sgd (linear, frozen "
                        "backbone) or eval.protocol=probes")


def fraction_label(fraction: float) -> str:
    """'1%', '10%', '100%': the key of one fraction in results.json and the compare table."""
    return f"{100 * fraction:g}%"


def balanced_subset(labels: torch.Tensor, fraction: float, num_classes: int, seed: int) -> torch.Tensor:
    """Sorted indices of round(fraction * N / classes) images of every class (at least one, at most all of
    it), drawn by a permutation seeded per subset: the same labels and seed give the same subset."""
    if fraction >= 1:
        return torch.arange(len(labels))
    per_class = max(1, round(fraction * len(labels) / num_classes))
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(num_classes):
        members = (labels == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=g)][:per_class])
    return torch.cat(picked).sort().values


def subset_sha1(indices: torch.Tensor) -> str:
    return hashlib.sha1(",".join(map(str, indices.tolist())).encode()).hexdigest()


@torch.no_grad()
def _test_logits(net: nn.Module, x: torch.Tensor, cfg: DictConfig, device) -> torch.Tensor:
    net.eval()
    d, bs = cfg.data, int(cfg.eval.batch_size)
    return torch.cat([net(plain_view(x[i:i + bs].to(device), int(d.image_size), list(d.mean), list(d.std))).float()
                      .cpu() for i in range(0, len(x), bs)])


def finetune(backbone: nn.Module, feat_dim: int, train_x: torch.Tensor, train_y: torch.Tensor, data: ImageData,
             cfg: DictConfig, device) -> dict:
    """Fine-tunes a copy of `backbone` plus a linear classifier on (train_x, train_y); test top-1 / top-5."""
    ft, d = cfg.eval.finetune, cfg.data
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(int(cfg.seed))
    torch.manual_seed(int(cfg.seed))  # the classifier's initial weights
    net = nn.Sequential(copy.deepcopy(backbone), nn.Linear(feat_dim, data.num_classes)).to(device).train()
    n, bs = len(train_x), min(int(ft.batch_size), len(train_x))
    steps = max(int(ft.min_steps), int(ft.epochs) * math.ceil(n / bs))
    lr = float(ft.lr) * bs / 256
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]  # BN and biases: no weight decay
    opt = torch.optim.SGD([{"params": decay, "weight_decay": float(ft.weight_decay)},
                           {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    mean = torch.tensor(list(d.mean), device=device).view(1, -1, 1, 1)
    std = torch.tensor(list(d.std), device=device).view(1, -1, 1, 1)
    aug_gen = torch.Generator(device=device).manual_seed(int(cfg.seed))
    bf16 = device.type == "cuda" if isinstance(device, torch.device) else str(device).startswith("cuda")
    order, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + bs > n:  # a new epoch: a new order (the last partial batch is dropped, as in pretraining)
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + bs]
        pos += bs
        x = train_x[idx].to(device).float() / 255
        x = random_resized_crop_flip(x, int(d.image_size), (float(d.crop_scale_min), 1.0), (3 / 4, 4 / 3),
                                     float(d.flip_p), aug_gen)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net((x - mean) / std), train_y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    if not math.isfinite(loss.item()):
        return {"top1": None, "top5": None, "error": f"loss {loss.item()} after {steps} steps"}
    logits = _test_logits(net, data.test_x, cfg, device)
    return {"top1": round(topk_accuracy(logits, data.test_y, 1), 2), "top5": round(topk_accuracy(logits, data.test_y, 5), 2),
            "steps": steps, "batch_size": bs, "lr": lr, "time_s": round(time.perf_counter() - start, 2)}


def evaluate_finetune(backbone: nn.Module, feat_dim: int, data: DataSource, cfg: DictConfig, device,
                      run_dir: Path | None) -> dict:
    """One fine-tuning per eval.finetune.label_fractions, keyed '100%', '10%', '1%'. Each subset's indices go
    to <run>/label_subsets/<pct>.txt; results.json records its seed, size and sha1."""
    from ssl_zoo.evaluation.frozen import eval_split

    train_x, train_y = eval_split(data, cfg)
    if not data.in_memory:
        raise UserError("eval.protocol=finetune needs the dataset in memory (set data.stream=false)")
    ft, out = cfg.eval.finetune, {}
    seed = int(ft.subset_seed)
    for fraction in sorted({float(f) for f in ft.label_fractions}, reverse=True):
        idx = balanced_subset(train_y, fraction, data.num_classes, seed)
        name = fraction_label(fraction)
        counts = torch.bincount(train_y[idx], minlength=data.num_classes)
        subset = {"fraction": fraction, "n_labels": len(idx), "per_class_min": int(counts.min()),
                  "per_class_max": int(counts.max()), "subset_seed": seed, "subset_sha1": subset_sha1(idx)}
        if run_dir is not None and fraction < 1:
            subset["indices_file"] = write_label_subset(run_dir, name, idx.tolist())
        out[name] = {**subset, **finetune(backbone, feat_dim, train_x[idx], train_y[idx], data, cfg, device)}
    return out
