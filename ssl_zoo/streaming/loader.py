"""Streamed datasets for the trainer and the evaluation: uint8 batches made in DataLoader workers.

A batch is one DataLoader item: the sampler hands each worker a whole batch key (epoch and the index rows of the
batch) and the worker returns the finished uint8 tensors, so workers never exchange samples and the DataLoader
keeps batches in order. Each batch is a pure function of its key, whatever the number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ssl_zoo.errors import UserError
from ssl_zoo.streaming.bad_samples import Entry
from ssl_zoo.streaming.decode import SampleReader, decode_rgb, resized_crop
from ssl_zoo.streaming.index import Index, default_cache_dir, folder_classes, load_index
from ssl_zoo.streaming.sampling import CROP_STREAM, center_crop_box, replacement, resized_crop_box, sample_rng

MAX_REPLACEMENTS = 10
LABELLED_STREAM = 3  # the order of a linear evaluation's epochs (crop boxes keep sampling.CROP_STREAM)
EVAL_SEED = 0  # eval subsets (eval.max_train, monitor images) come from one fixed shuffle of each split


@dataclass(frozen=True)
class CropSpec:
    """One view recipe's crops: n crops of size x size, RandomResizedCrop(scale, ratio)."""
    n: int
    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float]


class _Samples(Dataset):
    """Decoding with replacement of unreadable samples (shared by the training and the evaluation batches)."""

    def __init__(self, index: Index, seed: int):
        self.index, self.seed = index, seed
        self.reader = SampleReader(index)

    def _describe(self, i: int) -> str:
        row = self.index.rows[i]
        path = self.index.file_path(int(row["file"]))
        return str(path) if int(row["size"]) < 0 else f"{path}@{int(row['offset'])}"

    def image(self, i: int, epoch: int, bad: list[Entry]):
        """(RGB image, the row it came from): row i, or its deterministic replacement when i is unreadable."""
        row = i
        for attempt in range(MAX_REPLACEMENTS + 1):
            try:
                return decode_rgb(self.reader.read(row)), row
            except Exception as err:  # any read or decode failure (PIL raises many types) marks the sample bad
                bad.append((row, self._describe(row), f"{type(err).__name__}: {err}"))
                row = replacement(i, len(self.index), self.seed, epoch, attempt)
        raise UserError(f"sample {i} and {MAX_REPLACEMENTS} replacements could not be read; see the files "
                        f"under {self.index.split_dir}")


class TrainBatches(_Samples):
    """key (epoch, rows) -> (per recipe uint8 [n*B, 3, size, size] crop-major as ViewMaker orders views,
    labels int64 [B], unreadable entries)."""

    def __init__(self, index: Index, specs: list[CropSpec], seed: int):
        super().__init__(index, seed)
        self.specs = specs

    def boxes(self, i: int, epoch: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The crop box of every view of sample i (recipes in order, n each), from (seed, epoch, i, view)."""
        out, view = [], 0
        for spec in self.specs:
            for _ in range(spec.n):
                rng = sample_rng(CROP_STREAM, self.seed, epoch, i, view)
                out.append(resized_crop_box(width, height, spec.scale, spec.ratio, rng))
                view += 1
        return out

    def sample_crops(self, i: int, epoch: int, bad: list[Entry]) -> tuple[list[np.ndarray], int]:
        """(every view's uint8 [size, size, 3] crop, label) of sample i decoded with PIL; an unreadable sample
        is replaced by its deterministic stand-in (whose label it then carries), its crop boxes stay i's draws."""
        img, used = self.image(i, epoch, bad)
        sizes = [spec.size for spec in self.specs for _ in range(spec.n)]
        crops = [resized_crop(img, box, size) for box, size in zip(self.boxes(i, epoch, *img.size), sizes)]
        return crops, int(self.index.rows[used]["label"])

    def place(self, out: list, k: int, b: int, crops: list) -> None:
        """Puts sample k's view crops into the per-recipe batches: crop j of recipe r at row j*B + k."""
        view = 0
        for spec, buf in zip(self.specs, out):
            for j in range(spec.n):
                buf[j * b + k] = crops[view]
                view += 1

    def __getitem__(self, key: tuple[int, np.ndarray]):
        epoch, rows = key
        b = len(rows)
        out = [np.empty((s.n * b, s.size, s.size, 3), dtype=np.uint8) for s in self.specs]
        labels = np.empty(b, dtype=np.int64)
        bad: list[Entry] = []
        for k, i in enumerate(rows):
            crops, labels[k] = self.sample_crops(int(i), epoch, bad)
            self.place(out, k, b, crops)
        crops = [torch.from_numpy(o).permute(0, 3, 1, 2).contiguous() for o in out]
        return crops, torch.from_numpy(labels), bad


class EvalBatches(_Samples):
    """rows -> (uint8 [B, 3, size, size]: Resize(resize) of the shorter side + CenterCrop(size), unreadable
    entries)."""

    def __init__(self, index: Index, size: int, resize: int):
        super().__init__(index, EVAL_SEED)
        self.size, self.resize = size, resize

    def __getitem__(self, rows: np.ndarray) -> tuple[torch.Tensor, list[Entry]]:
        out = np.empty((len(rows), self.size, self.size, 3), dtype=np.uint8)
        bad: list[Entry] = []
        for k, i in enumerate(rows):
            img, _ = self.image(int(i), 0, bad)  # eval: the same replacement every time
            out[k] = resized_crop(img, center_crop_box(*img.size, self.size, self.resize), self.size)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), bad


def _as_is(batch):
    return batch  # the dataset returns finished batches


def _loader(dataset: Dataset, keys: list, workers: int, pin: bool) -> DataLoader:
    # batch_size=None: each key is a whole batch. Not persistent: a new loader per epoch starts from its own keys.
    return DataLoader(dataset, sampler=keys, batch_size=None, num_workers=workers, pin_memory=pin,
                      prefetch_factor=2 if workers else None, collate_fn=_as_is)


class LazyImages:
    """Images of some rows of an index, decoded only when asked: `x[a:b]` is lazy too, `x.to(device)` decodes
    (the evaluation treats it as the uint8 tensor of the in-memory datasets), `x.batches(n)` decodes in
    DataLoader workers, batch by batch, in order."""

    def __init__(self, index: Index, rows: np.ndarray, size: int, resize: int, workers: int,
                 bad: list[Entry] | None = None):
        self.index, self.rows, self.size, self.resize, self.workers = index, rows, size, resize, workers
        self.bad: list[Entry] = [] if bad is None else bad  # unreadable images met so far (shared by slices)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: slice) -> LazyImages:
        if not isinstance(item, slice):
            raise TypeError("LazyImages takes slices")
        return LazyImages(self.index, self.rows[item], self.size, self.resize, self.workers, self.bad)

    def to(self, device) -> torch.Tensor:
        if self.workers and len(self.rows) > 64:  # e.g. the 1024 monitor images: decoded in the workers
            return torch.cat(list(self.batches(64))).to(device)
        x, bad = EvalBatches(self.index, self.size, self.resize)[self.rows]
        self.bad.extend(bad)
        return x.to(device)

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        keys = [self.rows[i:i + batch_size] for i in range(0, len(self.rows), batch_size)]
        workers = min(self.workers, len(keys))
        for x, bad in _loader(EvalBatches(self.index, self.size, self.resize), keys, workers, False):
            self.bad.extend(bad)
            yield x

    def take_bad(self) -> list[Entry]:
        """The unreadable images met since the last call (each listed once by the caller)."""
        out = list(self.bad)
        self.bad.clear()
        return out


@dataclass
class StreamedData:
    """The streaming counterpart of data.ImageData: train_x/test_x are LazyImages (each split in one fixed
    shuffled order, so `[:n]` is a class-balanced subset), pretraining reads `pretrain_rows` of `train`."""
    train: Index
    val: Index
    num_classes: int
    pretrain_rows: np.ndarray
    train_x: LazyImages
    train_y: torch.Tensor
    test_x: LazyImages
    test_y: torch.Tensor
    workers: int
    max_bad_fraction: float
    decode: str = "cpu"  # data.decode: cpu (PIL in the workers) | gpu (nvjpeg in this process, ssl_zoo.streaming.gpu_decode)

    def train_loader(self, specs: list[CropSpec], seed: int, epoch: int, order: np.ndarray, batches: range,
                     batch_size: int, rank: int, world: int, pin: bool):
        """Batches `batches` of the epoch whose order (positions into pretrain_rows) is `order`; this rank's
        part of each global batch: (per recipe crops, labels, unreadable entries) items."""
        keys = []
        for i in batches:
            start = i * batch_size * world + rank * batch_size
            keys.append((epoch, self.pretrain_rows[order[start:start + batch_size]]))
        return self._crops(specs, seed, keys, pin)

    def labelled_loader(self, rows: np.ndarray, specs: list[CropSpec], seed: int, epoch: int, batch_size: int,
                        pin: bool):
        """One epoch over `rows` of train (the labelled images of a linear evaluation) in an order drawn from
        (seed, epoch), every batch whole but the last; items as train_loader's."""
        order = np.random.default_rng([LABELLED_STREAM, seed, epoch]).permutation(len(rows))
        keys = [(epoch, rows[order[i:i + batch_size]]) for i in range(0, len(rows), batch_size)]
        return self._crops(specs, seed, keys, pin)

    def _crops(self, specs: list[CropSpec], seed: int, keys: list, pin: bool):
        if self.decode != "gpu":
            return _loader(TrainBatches(self.train, specs, seed), keys, self.workers, pin)
        from ssl_zoo.streaming.gpu_decode import DeviceDecoded, DeviceDecoder, EncodedTrainBatches

        loader = _loader(EncodedTrainBatches(self.train, specs, seed), keys, self.workers, False)
        return DeviceDecoded(loader, DeviceDecoder(TrainBatches(self.train, specs, seed), "cuda"))


def default_workers() -> int:
    """One worker per core this process may use (DataLoader workers decode while the main process trains)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(16, cores // max(local, 1)))


def _split_dir(root: Path, split: str, layout: str) -> Path:
    path = root / split
    if not path.is_dir():
        what = "<class>/<image>" if layout == "folder" else "*.tar shards"
        raise UserError(f"{root} needs {split}/ holding {what} (train/ and val/)")
    return path


def load_streamed(cfg) -> StreamedData:
    """cfg is the `data` node; every problem with the folder is a UserError here, before anything is written."""
    root = Path(str(cfg.root)).expanduser()
    layout = str(cfg.get("format") or "folder")
    cache = Path(str(cfg.index_dir)).expanduser() if cfg.get("index_dir") else default_cache_dir()
    train_dir, val_dir = _split_dir(root, "train", layout), _split_dir(root, "val", layout)
    if layout == "folder":
        subset = list(cfg.classes) if cfg.get("classes") is not None else None
        classes = folder_classes(train_dir, subset)
        train = load_index(train_dir, layout, cache, classes, is_train=True)
        val = load_index(val_dir, layout, cache, classes, is_train=False)
        num_classes = len(classes)
    else:
        train, val = load_index(train_dir, layout, cache), load_index(val_dir, layout, cache)
        num_classes = int(train.rows["label"].max()) + 1
        if len(val) and int(val.rows["label"].max()) >= num_classes:
            raise UserError(f"{val_dir} has label {int(val.rows['label'].max())} but train/ labels stop at "
                            f"{num_classes - 1}")
    size = int(cfg.image_size)
    resize = int(cfg.eval_resize) if cfg.get("eval_resize") else round(size / 0.875)  # 256 for 224
    if resize < size:
        raise UserError(f"data.eval_resize={resize} is smaller than data.image_size={size}: the centre crop would "
                        "leave the image; set data.eval_resize >= data.image_size (or null)")
    workers = default_workers() if cfg.get("workers") is None else int(cfg.workers)
    decode = str(cfg.get("decode") or "cpu")
    if decode == "gpu" and not torch.cuda.is_available():
        raise UserError("data.decode=gpu decodes JPEGs with nvjpeg on a CUDA device, and none is visible; "
                        "set data.decode=cpu")
    shuffled = [np.random.default_rng(EVAL_SEED).permutation(len(ix)) for ix in (train, val)]
    n = cfg.get("train_subset")
    train_rows = shuffled[0][:int(n)] if n is not None else shuffled[0]
    return StreamedData(
        train=train, val=val, num_classes=num_classes, pretrain_rows=np.sort(train_rows),
        train_x=LazyImages(train, train_rows, size, resize, workers),
        train_y=torch.from_numpy(train.labels()[train_rows]),
        test_x=LazyImages(val, shuffled[1], size, resize, workers),
        test_y=torch.from_numpy(val.labels()[shuffled[1]]),
        workers=workers, max_bad_fraction=float(cfg.get("max_bad_fraction", 0.01)), decode=decode)
