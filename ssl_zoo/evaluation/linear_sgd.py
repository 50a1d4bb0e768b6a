"""eval.protocol=sgd: the linear evaluation of the SSL literature (BYOL, SimSiam, solo-learn).

A linear classifier on the FROZEN backbone (BatchNorm in eval mode, no gradient into the backbone), trained with
SGD (momentum 0.9, optionally Nesterov), a cosine learning rate per step and no weight decay, on
RandomResizedCrop + horizontal flip views of the labelled train images for eval.epochs, then top-1 / top-5 on the
centre-crop test split. In-memory datasets crop with the batched view ops; streamed ones with the streaming
workers' crops (the same boxes as pretraining draws them: from (seed, epoch, index)). The features are recomputed
every epoch (the views change), so this costs eval.epochs passes of the backbone over the train split.

The classifier reads the features standardised by the mean and std of the centre-crop train features (as the
L-BFGS probe and MAE's linear probe do): an affine map folded into the linear layer, so the same classifiers are
reachable, but the step SGD takes no longer depends on the backbone's feature scale (a random-init small_cnn's
features are ~1e-3 in size, a trained one's ~0.1: unstandardised, one lr cannot suit both).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from ssl_zoo.data.source import DataSource, LabelledCrop
from ssl_zoo.data.streaming.bad_samples import list_eval_samples
from ssl_zoo.data.views import plain_view
from ssl_zoo.evaluation.probes import Rows, correct_count

SEED_OFFSET = 0x11EA  # the classifier's init and the views' draws: apart from pretraining's


def _device_type(device) -> str:
    return torch.device(device).type


@torch.no_grad()
def centre_crop_moments(backbone: nn.Module, data: DataSource, train_x, cfg: DictConfig, device,
                        features=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (at least 1e-6) of the backbone's centre-crop train features: `features` when
    the caller has them (the probes' cached features, a tensor or a memory-mapped array), else one pass."""
    if features is None:
        was_training = backbone.training
        backbone.eval()
        try:
            size, mean, std = int(cfg.data.image_size), list(cfg.data.mean), list(cfg.data.std)
            features = torch.cat([backbone(plain_view(x.to(device), size, mean, std)).float().cpu()
                                  for x in data.image_batches(train_x, int(cfg.eval.batch_size))])
        finally:
            backbone.train(was_training)
    mu, sd = Rows(features, device).mean_std()
    return mu.to(device), sd.clamp_min(1e-6).to(device)


def linear_sgd(backbone: nn.Module, feat_dim: int, data: DataSource, train_x, train_y, cfg: DictConfig, device,
               run_dir: Path | None = None, moments: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Trains the linear classifier on the frozen `backbone` (never modified) on train_x (the first images of
    data.train_x, labelled train_y) and scores it on data.test_x. `moments`: centre_crop_moments of train_x
    (computed here when not given)."""
    e, d = cfg.eval, cfg.data
    crop = LabelledCrop(int(d.image_size), (float(d.crop_scale_min), 1.0), (3 / 4, 4 / 3), float(d.flip_p))
    seed = int(cfg.seed) + SEED_OFFSET
    start = time.perf_counter()
    f_mean, f_std = moments if moments is not None else centre_crop_moments(backbone, data, train_x, cfg, device)
    n, epochs = len(train_x), int(e.epochs)
    bs = min(int(e.sgd.batch_size), n)
    steps = epochs * math.ceil(n / bs)
    lr = float(e.sgd.lr) * bs / 256
    torch.manual_seed(int(cfg.seed) + SEED_OFFSET)
    clf = nn.Linear(feat_dim, data.num_classes).to(device)
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=0.9, nesterov=bool(e.sgd.nesterov), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    mean, std = list(d.mean), list(d.std)
    m, s = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (mean, std))
    bf16 = _device_type(device) == "cuda"
    was_training = backbone.training
    backbone.eval()  # frozen: BatchNorm uses its running statistics, nothing is updated
    loss = torch.zeros(())
    try:
        for epoch in range(epochs):
            gen = torch.Generator(device=device).manual_seed(seed * 1009 + epoch)  # the epoch's crops and flips
            for x, y in data.labelled_views(train_x, train_y, crop, seed, epoch, bs, gen, device):
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                    f = backbone((x - m) / s).float()
                f = (f - f_mean) / f_std
                loss = F.cross_entropy(clf(f), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        top1 = top5 = 0
        with torch.no_grad():
            test_y = data.test_y.to(device)
            seen = 0
            for images in data.image_batches(data.test_x, int(e.batch_size)):
                x = plain_view(images.to(device), int(d.image_size), mean, std)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                    f = (backbone(x).float() - f_mean) / f_std
                logits, y = clf(f), test_y[seen:seen + len(x)]
                top1, top5, seen = top1 + correct_count(logits, y, 1), top5 + correct_count(logits, y, 5), seen + len(x)
    finally:
        backbone.train(was_training)
    list_eval_samples(run_dir, data.take_bad())
    out = {"protocol": "sgd", "epochs": epochs, "steps": steps, "batch_size": bs, "lr": lr,
           "nesterov": bool(e.sgd.nesterov), "standardised": True, "n_train": n,
           "time_s": round(time.perf_counter() - start, 2)}
    if not math.isfinite(float(loss.detach())):
        return {**out, "top1": None, "top5": None, "error": f"loss {float(loss.detach())} after {steps} steps"}
    return {**out, "top1": round(100.0 * top1 / seen, 2), "top5": round(100.0 * top5 / seen, 2)}
