"""Streamed datasets for the trainer and the evaluation (data.source's DataSource): uint8 batches made in
DataLoader workers.

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

from ssl_zoo.common.errors import UserError
from ssl_zoo.data.source import LabelledCrop, PretrainBatch, epoch_order
from ssl_zoo.data.streaming.bad_samples import BadSampleLog, Entry
from ssl_zoo.data.streaming.gpu_decode import DeviceDecoded, DeviceDecoder, EncodedTrainBatches
from ssl_zoo.data.streaming.index import Index, default_cache_dir, folder_classes, load_index
from ssl_zoo.data.streaming.samples import (
    EVAL_SEED,
    LABELLED_STREAM,
    CropSpec,
    EvalBatches,
    TrainBatches,
    batch_loader,
)
from ssl_zoo.data.views import ViewMaker


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
        for x, bad in batch_loader(EvalBatches(self.index, self.size, self.resize), keys, workers, False):
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
    decode: str = "cpu"  # data.decode: cpu (PIL in the workers) | gpu (nvjpeg in this process, ssl_zoo.data.streaming.gpu_decode)

    @property
    def num_pretrain_images(self) -> int:
        return len(self.pretrain_rows)

    @property
    def in_memory(self) -> bool:
        return False

    def pretrain_input(self, views: ViewMaker, device: torch.device, seed: int, batch_size: int, rank: int,
                       world: int, run_dir: Path | None) -> StreamedPretrainInput:
        return StreamedPretrainInput(self, views, device, seed, batch_size, rank, world, run_dir)

    def image_batches(self, images: LazyImages, batch_size: int) -> Iterator[torch.Tensor]:
        return images.batches(batch_size)

    def labelled_views(self, images: LazyImages, labels: torch.Tensor, crop: LabelledCrop, seed: int, epoch: int,
                       batch_size: int, generator: torch.Generator, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Crops cut by the workers from the full-resolution images (the labels are the index's: an unreadable
        image's stand-in carries its own), flipped here."""
        pin = torch.device(device).type == "cuda"
        spec = CropSpec(1, crop.size, crop.scale, crop.ratio)
        for crops, y, bad in self.labelled_loader(images.rows, [spec], seed, epoch, batch_size, pin):
            images.bad.extend(bad)  # listed by take_bad(), with the evaluation's other unreadable images
            x = crops[0].to(device, non_blocking=pin).float() / 255
            flip = torch.rand(len(x), generator=generator, device=x.device) < crop.flip_p
            yield torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), y.to(device, non_blocking=pin)

    def take_bad(self) -> list[Entry]:
        return [*self.train_x.take_bad(), *self.test_x.take_bad()]

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
            return batch_loader(TrainBatches(self.train, specs, seed), keys, self.workers, pin)

        loader = batch_loader(EncodedTrainBatches(self.train, specs, seed), keys, self.workers, False)
        return DeviceDecoded(loader, DeviceDecoder(TrainBatches(self.train, specs, seed), "cuda"))


class StreamedPretrainInput:
    """Each view recipe's crops cut by the DataLoader workers, copied to the device; unreadable samples are
    replaced, listed in <run>/bad_samples.txt and counted against data.max_bad_fraction."""

    def __init__(self, data: StreamedData, views: ViewMaker, device: torch.device, seed: int, batch_size: int,
                 rank: int, world: int, run_dir: Path | None):
        self.data, self.device, self.seed = data, device, seed
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.specs = [CropSpec(r.n, r.size, tuple(r.scale), tuple(r.ratio)) for r in views.recipes]
        self.bad_samples = BadSampleLog(run_dir, len(data.train), data.max_bad_fraction)
        self.bad_data_error: UserError | None = None

    def batches(self, epoch: int, steps: range) -> Iterator[PretrainBatch]:
        order = epoch_order(self.data.num_pretrain_images, self.seed, epoch).numpy()
        pin = self.device.type == "cuda"
        loader = self.data.train_loader(self.specs, self.seed, epoch, order, steps, self.batch_size, self.rank,
                                        self.world, pin)
        for crops, labels, bad in loader:
            if bad:
                try:
                    self.bad_samples.add(bad)
                except UserError as err:  # raised by the trainer at the step's stop vote, on every rank at once
                    self.bad_data_error = err
            yield [c.to(self.device, non_blocking=pin) for c in crops], labels.to(self.device, non_blocking=pin)


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
