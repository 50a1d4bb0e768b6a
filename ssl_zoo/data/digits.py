"""sklearn's digits, split once and kept as a small .npz in the ssl-zoo cache: importing sklearn costs seconds
at every start, reading 1,797 8x8 images from the cache costs milliseconds. The split is sklearn's (stratified,
25% test, random_state 0) whichever way the arrays come; a cache that cannot be read or written is ignored."""

from __future__ import annotations

import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

SPLIT = ("train_x", "train_y", "test_x", "test_y")


def cache_file() -> Path | None:
    from ssl_zoo.data.streaming.index import default_cache_dir

    try:
        sklearn = version("scikit-learn")  # the split is sklearn's: another version may split differently
    except PackageNotFoundError:
        return None
    return default_cache_dir().parent / f"digits-split-sklearn{sklearn}.npz"


def digits_split() -> dict[str, np.ndarray]:
    """{train_x, train_y, test_x, test_y}: uint8 images [N, 8, 8] scaled to 0..255, int64 labels."""
    path = cache_file()
    cached = _read(path) if path else None
    if cached is not None:
        return cached
    split = _split_with_sklearn()
    if path:
        _write(path, split)
    return split


def _split_with_sklearn() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    parts = train_test_split(images, digits.target.astype(np.int64), test_size=0.25, stratify=digits.target,
                             random_state=0)
    return dict(zip(("train_x", "test_x", "train_y", "test_y"), parts, strict=True))


def _read(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            split = {k: f[k] for k in SPLIT}
    except Exception:  # absent, truncated, not an npz, keys missing: made again from sklearn
        return None
    images_ok = all(split[k].dtype == np.uint8 and split[k].ndim == 3 and split[k].shape[1:] == (8, 8)
                    for k in ("train_x", "test_x"))
    labels_ok = all(split[k].dtype == np.int64 and split[k].ndim == 1 and split[k].min(initial=0) >= 0
                    and split[k].max(initial=0) <= 9 for k in ("train_y", "test_y"))
    sizes_ok = len(split["train_x"]) == len(split["train_y"]) == 1347 and len(split["test_x"]) == len(
        split["test_y"]) == 450
    return split if images_ok and labels_ok and sizes_ok else None


def _write(path: Path, split: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    except OSError:  # a read-only cache (or a file where its folder would be): the next start splits again
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **split)
        os.replace(tmp, path)  # whole or absent: a concurrent reader never sees half a file
    except OSError:  # a full disk: the partial file goes, the next start splits again
        Path(tmp).unlink(missing_ok=True)
