"""Probes on frozen features (plain tensor functions): weighted kNN and a multinomial logistic-regression probe.

Both are the standard offline protocols; the online probe trained during pretraining lives in the trainer.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

KNN_KS = (10, 20, 100, 200)
KNN_TS = (0.05, 0.07, 0.1, 0.2)
WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def auto_knn_k(n_train: int, num_classes: int) -> int:
    """k for weighted kNN when the user has not set it: ~15% of a class's training images, at most 200.
    ImageNet's k=200 is ~15% of its ~1,281 images per class; k=200 on a 400-image folder votes across classes
    (17% top-1 there vs 46% at k=10). Gives 200 on CIFAR-10/Fashion-MNIST/STL-10, 75 on CIFAR-100, 20 on digits."""
    return max(1, min(200, round(0.15 * n_train / max(num_classes, 1))))


def knn_key(k: int, t: float) -> str:
    return f"k={k},T={t:g}"


@torch.no_grad()
def knn_sweep(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
              num_classes: int, ks=KNN_KS, ts=KNN_TS, chunk: int = 512) -> dict[str, float]:
    """Weighted kNN on cosine similarity (Wu et al. 2018): each of the k nearest train samples votes
    exp(sim / T) for its class. One matmul + top-k per test chunk serves every (k, T) of the sweep: the votes
    of the k nearest are a cumulative sum over the neighbours sorted by similarity."""
    train_f, test_f = F.normalize(train_f.float(), dim=1), F.normalize(test_f.float(), dim=1)
    kmax = min(max(ks), len(train_f))
    at = torch.tensor([min(k, kmax) - 1 for k in ks], device=test_f.device)
    correct = torch.zeros(len(ts), len(ks), device=test_f.device)
    for i in range(0, len(test_f), chunk):
        sim, idx = (test_f[i:i + chunk] @ train_f.T).topk(kmax, dim=1)  # sorted, most similar first
        onehot = F.one_hot(train_y[idx], num_classes).float()  # [chunk, kmax, classes]
        truth = test_y[i:i + chunk, None]
        for j, t in enumerate(ts):
            weights = ((sim - sim[:, :1]) / t).exp()  # shifted by the row max: same vote, no overflow at small T
            votes = (onehot * weights[..., None]).cumsum(1).index_select(1, at)  # [chunk, len(ks), classes]
            correct[j] += (votes.argmax(-1) == truth).sum(0)
    return {knn_key(k, t): 100.0 * correct[j, n].item() / len(test_f)
            for j, t in enumerate(ts) for n, k in enumerate(ks)}


def knn_top1(train_f, train_y, test_f, test_y, k: int = 200, t: float = 0.1, num_classes: int | None = None) -> float:
    num_classes = num_classes or int(train_y.max()) + 1
    return knn_sweep(train_f, train_y, test_f, test_y, num_classes, (k,), (t,))[knn_key(k, t)]


@contextmanager
def cpu_threads(n: int):
    """Caps torch's intra-op threads for a block (process-wide setting, restored after)."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, old)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


SMALL_FIT = 2**24  # feature elements below which L-BFGS runs on one CPU thread


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, wd: float, steps: int = 100) -> nn.Linear:
    """Full-batch L-BFGS on mean cross-entropy + wd/2 |W|^2 from zero weights (convex: deterministic, no lr to
    tune — the strong-Wolfe line search picks every step)."""
    clf = nn.Linear(x.shape[1], num_classes).to(x.device)
    nn.init.zeros_(clf.weight)
    nn.init.zeros_(clf.bias)
    opt = torch.optim.LBFGS(clf.parameters(), lr=1, max_iter=steps, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(clf(x), y) + wd * clf.weight.pow(2).sum() / 2
        loss.backward()
        return loss

    # L-BFGS is a long chain of small ops: on a busy CPU, waiting for a second thread at every op cost 5-100x
    # more than it saved (measured: 60k x 128 features, 0.3 s on one thread vs 1.5 s on two).
    small = x.device.type == "cpu" and x.numel() < SMALL_FIT
    with torch.enable_grad(), cpu_threads(1 if small else torch.get_num_threads()):
        opt.step(closure)
    return clf


@torch.no_grad()
def topk_accuracy(logits: torch.Tensor, y: torch.Tensor, k: int = 1) -> float:
    k = min(k, logits.shape[1])
    return 100.0 * (logits.topk(k, dim=1).indices == y[:, None]).any(1).float().mean().item()


def linear_probe(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, wds=WEIGHT_DECAYS, val_fraction: float = 0.1, max_sweep_fit: int = 10_000,
                 steps: int = 100, seed: int = 0) -> dict:
    """Logistic regression on standardised features. The weight decay is chosen on a validation split carved
    from train (the sweep fits on at most max_sweep_fit of the rest: the sweep is the expensive part), then the
    probe is refit on all of train with the same regularisation strength and scored once on test (top-1, top-5)."""
    train_f, test_f = train_f.float(), test_f.float()
    mu, sd = train_f.mean(0), train_f.std(0).clamp_min(1e-6)
    train_f, test_f = (train_f - mu) / sd, (test_f - mu) / sd
    perm = torch.randperm(len(train_f), generator=torch.Generator().manual_seed(seed)).to(train_f.device)
    n_val = min(max(1, int(len(train_f) * val_fraction)), len(train_f) - 1)
    val, fit = perm[:n_val], perm[n_val:][:max_sweep_fit]
    sweep = {}
    for wd in wds:
        clf = fit_logistic(train_f[fit], train_y[fit], num_classes, wd, steps)
        with torch.no_grad():
            sweep[wd] = topk_accuracy(clf(train_f[val]), train_y[val])
    best = max(wds, key=lambda wd: (sweep[wd], wd))  # ties: the stronger regulariser
    # The same prior on all of train: wd multiplies a MEAN loss, so wd * n (sklearn's 1/C) is what carries over.
    refit_wd = best * len(fit) / len(train_f)
    clf = fit_logistic(train_f, train_y, num_classes, refit_wd, steps)
    with torch.no_grad():
        logits = clf(test_f)
    return {"top1": topk_accuracy(logits, test_y, 1), "top5": topk_accuracy(logits, test_y, 5), "wd": best,
            "refit_wd": refit_wd, "val_top1": sweep[best], "sweep": {f"{wd:g}": acc for wd, acc in sweep.items()},
            "n_sweep_fit": len(fit), "n_val": n_val, "n_train": len(train_f)}


def linear_probe_top1(train_f, train_y, test_f, test_y, num_classes: int | None = None, **kwargs) -> float:
    num_classes = num_classes or int(train_y.max()) + 1
    return linear_probe(train_f, train_y, test_f, test_y, num_classes, **kwargs)["top1"]
