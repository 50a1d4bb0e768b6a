"""The on-disk cache of a streaming index: when it is fresh (its signature) and whether what is read back fits.

A cache is trusted only when its signature matches the folder now and its files hold what this version writes
(format, dtypes, shapes, counts, offsets in range); anything else (another version's cache, a damaged disk, a
hand-copied folder) is rebuilt, never used and never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

FORMAT = 2  # bump when the cached files change meaning: older caches are then rebuilt
ARRAYS = ("rows", "names", "name_offsets")
LAYOUTS = ("folder", "webdataset")


def default_cache_dir() -> Path:
    base = os.environ.get("SSL_ZOO_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME")
                                                           or os.path.expanduser("~/.cache"), "ssl-zoo")
    return Path(base) / "index"


def cache_folder(cache_dir: Path, split_dir: Path, layout: str, classes: list[str] | None) -> Path:
    key = json.dumps([str(split_dir.resolve()), layout, classes])
    return cache_dir / hashlib.sha1(key.encode()).hexdigest()[:16]


# --- freshness: what must change for a cached index to be stale ---------------------------------------------
def _listing(folder: Path) -> list:
    """(name, size, mtime) of each entry of a folder: a shard's size or mtime changes when it is rewritten."""
    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        st = entry.stat()
        out.append((entry.name, st.st_size, st.st_mtime_ns))
    return out


def _folder_mtimes(split_dir: Path) -> list:
    """(path, mtime) of every folder below split_dir, at every depth the folder index walks (following links as
    it does): a folder's mtime changes when an entry is added, removed or renamed in it. Only folders are
    stat'ed (1.28M ImageNet files: about 1 s)."""
    out, todo = [], ["."]
    while todo:
        rel = todo.pop()
        folder = os.path.join(split_dir, rel)
        with os.scandir(folder) as entries:
            subs = sorted(e.name for e in entries if e.is_dir())
        out.append((rel, os.stat(folder).st_mtime_ns))
        todo += [os.path.join(rel, name) for name in reversed(subs)]
    return out


def signature(split_dir: Path, layout: str) -> str:
    """Changes whenever the index of split_dir could: the top-level entries (shards, class folders) and, for the
    folder layout, every nested folder."""
    parts = [FORMAT, layout, _listing(split_dir)]
    if layout == "folder":
        parts.append(_folder_mtimes(split_dir))
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()


# --- reading back ------------------------------------------------------------------------------------------
def read_cached(folder: Path, sig: str, layout: str, classes: list[str] | None,
                row_dtype: np.dtype) -> tuple[dict, dict[str, np.ndarray]] | None:
    """(meta, arrays) of a fresh cache whose files fit, memory-mapped; None when there is none or it must be
    rebuilt."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("signature") != sig:
            return None
        arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in ARRAYS}
        if _fits(meta, arrays, layout, classes, row_dtype):
            return meta, arrays
    except (OSError, ValueError, TypeError, KeyError, EOFError, RecursionError):
        pass
    return None


def _fits(meta: dict, arrays: dict[str, np.ndarray], layout: str, classes: list[str] | None,
          row_dtype: np.dtype) -> bool:
    rows, names, offsets = (arrays[k] for k in ARRAYS)
    count, found_classes = meta.get("count"), meta.get("classes")
    if meta.get("layout") != layout or layout not in LAYOUTS or not isinstance(found_classes, list):
        return False
    if layout == "folder" and found_classes != classes:
        return False
    if rows.dtype != row_dtype or rows.ndim != 1 or type(count) is not int or count < 1 or len(rows) != count:
        return False
    if names.dtype != np.uint8 or names.ndim != 1 or offsets.dtype != np.int64 or offsets.ndim != 1:
        return False
    if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(names) or np.any(np.diff(offsets) < 0):
        return False
    files, labels = rows["file"], rows["label"]
    if files.min() < 0 or files.max() >= len(offsets) - 1 or labels.min() < 0:
        return False
    if layout == "folder" and labels.max() >= len(classes):
        return False
    return bool(rows["offset"].min() >= 0 and rows["size"].min() >= -1)


# --- writing -------------------------------------------------------------------------------------------------
def save(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Written to a temporary folder and renamed: a reader never sees half an index. A cache that cannot be
    written (read-only home) only costs the next start a rebuild."""
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for key in ARRAYS:
            np.save(tmp / f"{key}.npy", np.asarray(arrays[key]))
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, **meta}))
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        elif folder.exists() or folder.is_symlink():
            folder.unlink()
        tmp.rename(folder)
    except OSError:
        for f in tmp.glob("*"):
            f.unlink(missing_ok=True)
        if tmp.exists():
            tmp.rmdir()
