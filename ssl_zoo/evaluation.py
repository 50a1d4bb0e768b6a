"""Frozen-feature evaluation: features computed once without augmentation, then weighted kNN and a linear probe."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.views import plain_view


@torch.no_grad()
def extract_features(net: nn.Module, images: torch.Tensor, size: int, mean, std, batch_size: int = 512,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    was_training = net.training
    net.eval()
    feats = []
    for i in range(0, len(images), batch_size):
        x = plain_view(images[i:i + batch_size].to(device), size, mean, std)
        feats.append(net(x).float().cpu())
    net.train(was_training)
    return torch.cat(feats)


@torch.no_grad()
def knn_top1(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
             k: int = 200, t: float = 0.1, num_classes: int | None = None, chunk: int = 1024) -> float:
    """Weighted kNN on cosine similarity (Wu et al. 2018): votes exp(sim / t) of the k nearest train samples."""
    num_classes = num_classes or int(train_y.max()) + 1
    train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    k = min(k, len(train_f))
    correct = 0
    for i in range(0, len(test_f), chunk):
        sim, idx = (test_f[i:i + chunk] @ train_f.T).topk(k, dim=1)
        votes = torch.zeros(len(idx), num_classes).scatter_add_(1, train_y[idx], (sim / t).exp())
        correct += (votes.argmax(1) == test_y[i:i + chunk]).sum().item()
    return 100.0 * correct / len(test_f)


def _fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, wd: float, steps: int = 100) -> nn.Linear:
    clf = nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.LBFGS(clf.parameters(), lr=1, max_iter=steps, history_size=10,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(clf(x), y) + wd * clf.weight.pow(2).sum() / 2
        loss.backward()
        return loss

    opt.step(closure)
    return clf


def linear_probe_top1(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                      num_classes: int | None = None, wds=(1e-5, 1e-4, 1e-3, 1e-2), seed: int = 0) -> float:
    """Multinomial logistic regression on standardised frozen features (full-batch L-BFGS). The weight decay
    is chosen on a validation split carved from train, then the probe is refit on all of train."""
    num_classes = num_classes or int(train_y.max()) + 1
    mu, sd = train_f.mean(0), train_f.std(0).clamp_min(1e-6)
    train_f, test_f = (train_f - mu) / sd, (test_f - mu) / sd
    perm = torch.randperm(len(train_f), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, len(train_f) // 10)
    val, fit = perm[:n_val], perm[n_val:]
    with torch.enable_grad():
        best = max(wds, key=lambda wd: _accuracy(_fit_linear(train_f[fit], train_y[fit], num_classes, wd),
                                                  train_f[val], train_y[val]))
        clf = _fit_linear(train_f, train_y, num_classes, best)
    return _accuracy(clf, test_f, test_y)


@torch.no_grad()
def _accuracy(clf: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (clf(x).argmax(1) == y).float().mean().item()


def probe(train_f, train_y, test_f, test_y, num_classes: int, k: int = 200, t: float = 0.1) -> dict:
    torch.manual_seed(0)
    return {"knn_top1": round(knn_top1(train_f, train_y, test_f, test_y, k, t, num_classes), 2),
            "linear_top1": round(linear_probe_top1(train_f, train_y, test_f, test_y, num_classes), 2)}
