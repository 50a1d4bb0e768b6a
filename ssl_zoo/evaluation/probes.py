"""Probes on frozen features (plain tensor functions): weighted kNN and a multinomial logistic-regression probe.

Both are the standard offline protocols; the online probe trained during pretraining lives in the trainer.
Features are a tensor, or a numpy array (a memory-mapped .npy of an ImageNet-size split): arrays
up to RESIDENT_BYTES as float32 are read once onto the device, larger ones are read in chunks of CHUNK_BYTES every
time they are needed, so host memory stays bounded whatever the number of samples. Both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.evaluation.feature_store import read_rows

KNN_KS = (10, 20, 100, 200)
KNN_TS = (0.05, 0.07, 0.1, 0.2)
WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
RESIDENT_BYTES = 512 * 2**20  # Fashion-MNIST / CIFAR / ImageNet-100 x 512-d features: one tensor on the device
CHUNK_BYTES = 64 * 2**20  # rows read at a time from larger (memory-mapped) features
MAX_CHUNK_ROWS = 16384
SIM_BYTES = 256 * 2**20  # test x train-chunk similarities held at once by the chunked kNN
VOTE_FLOATS = 2**25  # [test rows, k, classes] one-hot votes held at once (128 MB)

Features = torch.Tensor | np.ndarray


class Rows:
    """Feature rows [N, D] as float32 on `device`: held whole (tensors, small arrays) or read chunk by chunk from
    a (memory-mapped) array."""

    def __init__(self, f: Features, device: torch.device | str, resident_bytes: int | None = None,
                 chunk_bytes: int | None = None):
        self.n, self.dim = int(f.shape[0]), int(f.shape[1])
        self.device = torch.device(device)
        limit = RESIDENT_BYTES if resident_bytes is None else resident_bytes
        # at most MAX_CHUNK_ROWS rows: a chunk's logits (rows x classes) stay small too
        self.chunk_rows = max(1, min(MAX_CHUNK_ROWS, (CHUNK_BYTES if chunk_bytes is None else chunk_bytes)
                                     // (4 * max(self.dim, 1))))
        whole = isinstance(f, torch.Tensor) or self.n * self.dim * 4 <= limit
        self.whole = self._float(f) if whole else None
        self.array = None if whole else f

    def _float(self, part: Features) -> torch.Tensor:
        t = part if isinstance(part, torch.Tensor) else torch.from_numpy(read_rows(part, slice(None)))
        return t.to(self.device).float()

    @property
    def chunked(self) -> bool:
        return self.whole is None

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, float32 rows) in order."""
        if self.whole is not None:
            yield 0, self.whole
            return
        for start in range(0, self.n, self.chunk_rows):
            yield start, torch.from_numpy(read_rows(self.array, slice(start, start + self.chunk_rows))).to(self.device)

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows idx (any order), float32 on the device."""
        if self.whole is not None:
            return self.whole[idx.to(self.device)]
        order = idx.cpu().numpy()
        sort = np.argsort(order, kind="stable")
        rows = torch.from_numpy(read_rows(self.array, order[sort])).to(self.device)  # sorted: page by page
        out = torch.empty_like(rows)
        out[torch.from_numpy(sort).to(self.device)] = rows
        return out

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.whole is not None:
            return self.whole.mean(0), self.whole.std(0)
        total = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        squares = torch.zeros_like(total)
        for _, x in self.chunks():
            total += x.double().sum(0)
            squares += x.double().pow(2).sum(0)
        mean = total / self.n
        var = (squares - self.n * mean.pow(2)).clamp_min(0) / max(self.n - 1, 1)
        return mean.float(), var.sqrt().float()


def auto_knn_k(n_train: int, num_classes: int) -> int:
    """k for weighted kNN when the user has not set it: ~15% of a class's training images, at most 200.
    ImageNet's k=200 is ~15% of its ~1,281 images per class; k=200 on a 400-image folder votes across classes
    (17% top-1 there vs 46% at k=10). Gives 200 on CIFAR-10/Fashion-MNIST/STL-10, 75 on CIFAR-100, 20 on digits."""
    return max(1, min(200, round(0.15 * n_train / max(num_classes, 1))))


def knn_key(k: int, t: float) -> str:
    return f"k={k},T={t:g}"


def _device_of(*tensors) -> torch.device:
    return next((t.device for t in tensors if isinstance(t, torch.Tensor)), torch.device("cpu"))


@torch.no_grad()
def _nearest(test_block: torch.Tensor, train: Rows, kmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, train rows) of the kmax most similar train rows of each test row, most similar first;
    chunked train features are merged chunk by chunk (a running top-k)."""
    best_sim = best_idx = None
    for start, x in train.chunks():
        if train.chunked:  # whole features are normalised once by the caller
            x = F.normalize(x, dim=1)
        sim, idx = (test_block @ x.T).topk(min(kmax, len(x)), dim=1)
        if best_sim is None:
            best_sim, best_idx = sim, idx + start
            continue
        sim, idx = torch.cat([best_sim, sim], 1), torch.cat([best_idx, idx + start], 1)
        best_sim, pick = sim.topk(kmax, dim=1)
        best_idx = idx.gather(1, pick)
    return best_sim, best_idx


@torch.no_grad()
def knn_sweep(train_f: Features, train_y: torch.Tensor, test_f: Features, test_y: torch.Tensor,
              num_classes: int, ks=KNN_KS, ts=KNN_TS, chunk: int = 512, device: torch.device | str | None = None,
              resident_bytes: int | None = None, chunk_bytes: int | None = None) -> dict[str, float]:
    """Weighted kNN on cosine similarity (Wu et al. 2018): each of the k nearest train samples votes
    exp(sim / T) for its class. One matmul + top-k per test chunk serves every (k, T) of the sweep: the votes
    of the k nearest are a cumulative sum over the neighbours sorted by similarity."""
    device = torch.device(device) if device is not None else _device_of(train_f, test_f, test_y)
    train = Rows(train_f, device, resident_bytes, chunk_bytes)
    test = Rows(test_f, device, resident_bytes, chunk_bytes)
    train_y, test_y = train_y.to(device), test_y.to(device)
    if not train.chunked:
        train.whole = F.normalize(train.whole, dim=1)
    kmax = min(max(ks), train.n)
    at = torch.tensor([min(k, kmax) - 1 for k in ks], device=device)
    correct = torch.zeros(len(ts), len(ks), device=device)
    # chunked train features are visited once per block of test rows: blocks as large as SIM_BYTES of
    # similarities against one train chunk allow, so a pass over the file serves many test rows
    block = max(chunk, SIM_BYTES // (4 * train.chunk_rows)) if train.chunked else \
        max(1, min(chunk, SIM_BYTES // (4 * train.n)))
    votes_rows = max(1, min(chunk, VOTE_FLOATS // (kmax * num_classes)))
    for first, test_part in test.chunks():
        for b in range(0, len(test_part), block):
            queries = F.normalize(test_part[b:b + block], dim=1)
            near_sim, near_idx = _nearest(queries, train, kmax)
            for i in range(0, len(queries), votes_rows):  # votes in small chunks: [rows, kmax, classes] floats
                sim, idx = near_sim[i:i + votes_rows], near_idx[i:i + votes_rows]
                onehot = F.one_hot(train_y[idx], num_classes).float()
                truth = test_y[first + b + i:first + b + i + len(sim), None]
                for j, t in enumerate(ts):
                    weights = ((sim - sim[:, :1]) / t).exp()  # shifted by the row max: same vote, no overflow
                    votes = (onehot * weights[..., None]).cumsum(1).index_select(1, at)  # [chunk, len(ks), C]
                    correct[j] += (votes.argmax(-1) == truth).sum(0)
    return {knn_key(k, t): 100.0 * correct[j, n].item() / test.n
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


class Standardised:
    """Chunked rows standardised on the fly: (x - mean) / std, chunk by chunk."""

    def __init__(self, rows: Rows, mean: torch.Tensor, std: torch.Tensor):
        self.rows, self.mean, self.std = rows, mean, std
        self.shape = (rows.n, rows.dim)
        self.device = rows.device

    def numel(self) -> int:
        return self.rows.n * self.rows.dim

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        for start, x in self.rows.chunks():
            yield start, (x - self.mean) / self.std


def fit_logistic(x: torch.Tensor | Standardised, y: torch.Tensor, num_classes: int, wd: float,
                 steps: int = 100) -> nn.Linear:
    """Full-batch L-BFGS on mean cross-entropy + wd/2 |W|^2 from zero weights (convex: deterministic, no lr to
    tune — the strong-Wolfe line search picks every step). x too large for memory comes in chunks: each
    evaluation sums the loss and its gradient over them (the same full-batch objective)."""
    clf = nn.Linear(x.shape[1], num_classes).to(x.device)
    nn.init.zeros_(clf.weight)
    nn.init.zeros_(clf.bias)
    opt = torch.optim.LBFGS(clf.parameters(), lr=1, max_iter=steps, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        if isinstance(x, torch.Tensor):
            loss = F.cross_entropy(clf(x), y) + wd * clf.weight.pow(2).sum() / 2
            loss.backward()
            return loss
        total = torch.zeros((), device=x.device)
        for start, part in x.chunks():
            loss = F.cross_entropy(clf(part), y[start:start + len(part)], reduction="sum") / x.shape[0]
            loss.backward()
            total += loss.detach()
        reg = wd * clf.weight.pow(2).sum() / 2
        reg.backward()
        return total + reg.detach()

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


@torch.no_grad()
def correct_count(logits: torch.Tensor, y: torch.Tensor, k: int) -> int:
    k = min(k, logits.shape[1])
    return int((logits.topk(k, dim=1).indices == y[:, None]).any(1).sum())


def linear_probe(train_f: Features, train_y: torch.Tensor, test_f: Features, test_y: torch.Tensor,
                 num_classes: int, wds=WEIGHT_DECAYS, val_fraction: float = 0.1, max_sweep_fit: int = 10_000,
                 steps: int = 100, seed: int = 0, device: torch.device | str | None = None,
                 resident_bytes: int | None = None, chunk_bytes: int | None = None) -> dict:
    """Logistic regression on standardised features. The weight decay is chosen on a validation split carved
    from train (the sweep fits on at most max_sweep_fit of the rest: the sweep is the expensive part), then the
    probe is refit on all of train with the same regularisation strength and scored once on test (top-1, top-5)."""
    device = torch.device(device) if device is not None else _device_of(train_f, test_f, train_y)
    train = Rows(train_f, device, resident_bytes, chunk_bytes)
    test = Rows(test_f, device, resident_bytes, chunk_bytes)
    train_y, test_y = train_y.to(device), test_y.to(device)
    mu, sd = train.mean_std()
    sd = sd.clamp_min(1e-6)
    perm = torch.randperm(train.n, generator=torch.Generator().manual_seed(seed)).to(device)
    n_val = min(max(1, int(train.n * val_fraction)), train.n - 1)
    val, fit = perm[:n_val], perm[n_val:][:max_sweep_fit]
    x_fit = (train.take(fit) - mu) / sd
    val_parts = [val[i:i + train.chunk_rows] for i in range(0, n_val, train.chunk_rows)]
    if not train.chunked:
        val_parts = [val]
    sweep = {}
    for wd in wds:
        clf = fit_logistic(x_fit, train_y[fit], num_classes, wd, steps)
        with torch.no_grad():
            hits = sum(correct_count(clf((train.take(part) - mu) / sd), train_y[part], 1) for part in val_parts)
        sweep[wd] = 100.0 * hits / n_val
    best = max(wds, key=lambda wd: (sweep[wd], wd))  # ties: the stronger regulariser
    # The same prior on all of train: wd multiplies a MEAN loss, so wd * n (sklearn's 1/C) is what carries over.
    refit_wd = best * len(fit) / train.n
    whole = (train.whole - mu) / sd if not train.chunked else Standardised(train, mu, sd)
    clf = fit_logistic(whole, train_y, num_classes, refit_wd, steps)
    top1 = top5 = 0
    with torch.no_grad():
        for start, x in test.chunks():
            logits, y = clf((x - mu) / sd), test_y[start:start + len(x)]
            top1, top5 = top1 + correct_count(logits, y, 1), top5 + correct_count(logits, y, 5)
    return {"top1": 100.0 * top1 / test.n, "top5": 100.0 * top5 / test.n, "wd": best,
            "refit_wd": refit_wd, "val_top1": sweep[best], "sweep": {f"{wd:g}": acc for wd, acc in sweep.items()},
            "n_sweep_fit": len(fit), "n_val": n_val, "n_train": train.n}


def linear_probe_top1(train_f, train_y, test_f, test_y, num_classes: int | None = None, **kwargs) -> float:
    num_classes = num_classes or int(train_y.max()) + 1
    return linear_probe(train_f, train_y, test_f, test_y, num_classes, **kwargs)["top1"]
