"""Reading one sample's bytes and turning them into uint8 crops with PIL.

PIL identifies the format from the bytes (a PNG named .JPEG decodes), and every mode (grayscale, CMYK, palette,
alpha) is converted to RGB. Crops are resized straight from the full-resolution image with PIL's antialiasing
filter (`resize(box=...)`), which is torchvision's RandomResizedCrop on PIL images without the intermediate copy.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict

import numpy as np
from PIL import Image

from ssl_zoo.data.streaming.index import Index

RESAMPLE = Image.BILINEAR  # torchvision's default for RandomResizedCrop and Resize


class SampleReader:
    """Bytes of a row of an index. Shards stay open (a few per process): a read is one pread at the offset.
    Opened lazily, so a reader pickled into a DataLoader worker carries no file handles."""

    def __init__(self, index: Index, max_open: int = 16):
        self.index, self.max_open = index, max_open
        self._fds: OrderedDict[int, int] = OrderedDict()

    def __getstate__(self):
        return {**self.__dict__, "_fds": OrderedDict()}

    def read(self, i: int) -> bytes:
        row = self.index.rows[i]
        file, offset, size = int(row["file"]), int(row["offset"]), int(row["size"])
        if size < 0:
            with open(self.index.file_path(file), "rb") as f:
                return f.read()
        fd = self._fds.get(file)
        if fd is None:
            fd = os.open(self.index.file_path(file), os.O_RDONLY)
            self._fds[file] = fd
            if len(self._fds) > self.max_open:
                os.close(self._fds.popitem(last=False)[1])
        self._fds.move_to_end(file)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise OSError(f"short read: {len(data)} of {size} bytes (shard truncated?)")
        return data

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def decode_rgb(data: bytes) -> Image.Image:
    """Fully decoded RGB image; raises on anything unreadable (truncated files included)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    if img.mode != "RGB":
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        img = img.convert("RGB")
    return img


def resized_crop(img: Image.Image, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """uint8 [size, size, 3] of `box` resized with antialiasing."""
    return np.asarray(img.resize((size, size), RESAMPLE, box=box))
