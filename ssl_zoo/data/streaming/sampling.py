"""Every random choice of the streaming path as a pure function of (seed, epoch, index, view).

Nothing depends on which DataLoader worker makes a sample or on what that worker made before, so the batches are
the same for any number of workers, and a run resumed mid-epoch makes exactly the batches an uninterrupted run
makes. The epoch order is the seeded permutation of all samples both kinds of data use (data.source.epoch_order):
shuffled before it is cut into global batches, never shard by shard.
"""

from __future__ import annotations

import math

import numpy as np

CROP_STREAM, REPLACE_STREAM = 1, 2  # independent streams for crop boxes and bad-sample replacements


def sample_rng(stream: int, seed: int, epoch: int, index: int, view: int = 0) -> np.random.Generator:
    return np.random.default_rng([stream, seed, epoch, index, view])


def rank_batch(order: np.ndarray, i: int, batch_size: int, rank: int, world: int) -> np.ndarray:
    """This rank's part of global batch i: rank r reads rows [r*B, (r+1)*B) of the world*B samples."""
    start = i * batch_size * world + rank * batch_size
    return order[start:start + batch_size]


def resized_crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                     rng: np.random.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params (10 tries, then a centred crop of the clamped aspect ratio),
    with draws from `rng`; returns (left, top, right, bottom) in pixels of the full-resolution image."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def center_crop_box(width: int, height: int, size: int, resize: int) -> tuple[float, float, float, float]:
    """The box of the full-resolution image that Resize(resize) (shorter side) + CenterCrop(size) keeps, so one
    antialiased resize of that box gives the standard evaluation crop without resizing the whole image."""
    new_w, new_h = (resize, int(resize * height / width)) if width <= height else (int(resize * width / height),
                                                                                  resize)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def replacement(index: int, n: int, seed: int, epoch: int, attempt: int) -> int:
    """A deterministic other sample standing in for an unreadable one."""
    if n < 2:
        return index
    step = 1 + int(sample_rng(REPLACE_STREAM, seed, epoch, index, attempt).integers(n - 1))
    return (index + step) % n
