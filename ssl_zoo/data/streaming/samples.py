"""The per-batch datasets DataLoader workers run: each item is a whole batch, a pure function of its key (epoch and
the index rows of the batch), whatever the number of workers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ssl_zoo.common.errors import UserError
from ssl_zoo.data.streaming.bad_samples import Entry
from ssl_zoo.data.streaming.decode import SampleReader, decode_rgb, resized_crop
from ssl_zoo.data.streaming.index import Index
from ssl_zoo.data.streaming.sampling import (
    CROP_STREAM,
    center_crop_box,
    replacement,
    resized_crop_box,
    sample_rng,
)

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


def batch_loader(dataset: Dataset, keys: list, workers: int, pin: bool) -> DataLoader:
    # batch_size=None: each key is a whole batch. Not persistent: a new loader per epoch starts from its own keys.
    return DataLoader(dataset, sampler=keys, batch_size=None, num_workers=workers, pin_memory=pin,
                      prefetch_factor=2 if workers else None, collate_fn=_as_is)
