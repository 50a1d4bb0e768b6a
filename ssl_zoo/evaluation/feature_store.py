"""Features of a streamed split on disk as float32 .npy files, never held whole in host memory.

Rows arrive in order, one batch at a time, and are appended to the file; a finished split is renamed into place,
so a killed evaluation never leaves a half-written cache behind. Readers get the file memory-mapped and read it in
chunks through a fresh mapping each time (read_rows), so the pages they touch leave the process's resident set
after each chunk. float32, not float16: rounding features to float16 moved kNN top-1 at k=200 by a test image in
a few hundred (the linear probe did not move; benchmarks/STREAMING.md), and the cache must give the numbers the
features give.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch


class MappedRows:
    """Writes n rows to `path` (a .npy) and returns them memory-mapped. Without a path the file lives in a private
    temporary folder, removed once the returned array is garbage collected (or at exit)."""

    def __init__(self, n: int, path: Path | None = None):
        self.n, self.written, self.dim = n, 0, 0
        self._scratch = None if path is not None else tempfile.mkdtemp(prefix="ssl-zoo-features-")
        self._target = path if path is not None else Path(self._scratch) / "rows.npy"
        self._partial = self._target.with_name(f".{self._target.name}.{os.getpid()}.partial")
        self._file = None

    def _open(self) -> None:
        self._partial.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._partial, "wb")
        np.lib.format.write_array_header_1_0(
            self._file, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                         "shape": (self.n, self.dim)})

    def write(self, chunk: torch.Tensor) -> None:
        rows = chunk.detach().float().cpu()
        if self._file is None:
            self.dim = int(rows.shape[1])
            self._open()
        if self.written + len(rows) > self.n:
            raise RuntimeError(f"more than {self.n} feature rows written")
        self._file.write(rows.numpy().tobytes())
        self.written += len(rows)

    def finish(self) -> np.ndarray:
        """The rows, read-only and memory-mapped."""
        if self.written != self.n:
            self.abort()
            raise RuntimeError(f"{self.written} of {self.n} feature rows written")
        if self._file is None:  # no rows at all
            self._open()
        self._file.close()
        os.replace(self._partial, self._target)
        out = np.load(self._target, mmap_mode="r")
        if self._scratch is not None:
            weakref.finalize(out, shutil.rmtree, self._scratch, True)
        return out

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
        self._partial.unlink(missing_ok=True)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def load_mapped(folder: Path, splits: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """{split: memory-mapped rows} of a finished cache folder, or None when any split is missing or unreadable."""
    out = {}
    for split in splits:
        try:
            out[split] = np.load(folder / f"{split}.npy", mmap_mode="r")
        except (OSError, ValueError):
            return None
        if out[split].ndim != 2:
            return None
    return out


def _fresh(array: np.ndarray) -> np.ndarray:
    """A new mapping of a memory-mapped .npy (unmapped when dropped), or the array itself."""
    if isinstance(array, np.memmap) and array.filename:
        try:
            again = np.load(array.filename, mmap_mode="r")
        except (OSError, ValueError):
            return array
        if again.shape == array.shape and again.dtype == array.dtype:
            return again
    return array


def read_rows(array: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """float32 copy of array[rows] (a slice, or sorted indices) read through a fresh mapping, so that host memory
    holds only the rows asked for, not every page of a large file read so far."""
    source = _fresh(array)
    out = np.array(source[rows], dtype=np.float32)
    del source
    return out
