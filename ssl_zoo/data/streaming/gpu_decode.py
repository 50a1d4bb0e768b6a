"""data.decode=gpu: JPEGs decoded batched on the GPU (nvjpeg), every view cropped and resized there.

DataLoader workers read each sample's bytes and parse only its header (size, mode, progressive): a baseline RGB
or grayscale JPEG goes to the device as bytes plus its crop boxes, drawn from (seed, epoch, index, view) exactly
as on the CPU path; anything nvjpeg cannot decode (PNG and other formats, CMYK, progressive, a header PIL cannot
read) is decoded and cropped by PIL in the worker as on the CPU path. The main process decodes the batch with one
`torchvision.io.decode_jpeg(list, device=...)` call; a file that fails there (corrupt data after a good header)
falls back to the CPU path in the main process, with the CPU path's deterministic replacement; a file without
its JPEG end marker (truncated) is sent to the CPU path by the worker. Crops are resized
with antialiased bilinear interpolation from the full-resolution image, as PIL does on the CPU path. Workers never
touch CUDA (nvjpeg in forked workers is a known hang).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ssl_zoo.common.errors import UserError
from ssl_zoo.data.streaming.bad_samples import Entry
from ssl_zoo.data.streaming.samples import TrainBatches


def check_decode(cfg) -> None:
    """data.decode=gpu needs a CUDA device the run uses: a one-line error before anything is written."""
    if cfg.data.get("decode", "cpu") != "gpu":
        return
    if not cfg.data.get("stream", True):
        raise UserError("data.decode=gpu decodes streamed images; data.stream=false decodes the folder once with "
                        "PIL: drop one of them")
    if str(cfg.get("device", "auto")) == "cpu" or not torch.cuda.is_available():
        raise UserError("data.decode=gpu decodes JPEGs with nvjpeg on a CUDA device, and this run has none "
                        "(no CUDA device visible, or device=cpu); set data.decode=cpu")


def nvjpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG nvjpeg decodes to RGB (baseline, RGB or grayscale), read from its header only;
    None for anything else, which then takes the CPU path. A file without its end marker (truncated: decoders
    may return a part-grey image instead of failing) takes the CPU path too, where PIL refuses it."""
    if b"\xff\xd9" not in data[-16:]:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG" or img.mode not in ("RGB", "L") or img.info.get("progressive"):
                return None
            return img.size
    except Exception:  # unreadable header: the CPU path replaces and lists the sample
        return None


@dataclass
class EncodedBatch:
    """One batch as the workers hand it over: JPEG bytes and boxes for the device, PIL crops for the rest."""
    epoch: int
    rows: np.ndarray  # index rows of the batch, in order
    labels: torch.Tensor  # int64 [B]
    blob: torch.Tensor | None = None  # the device-decoded samples' JPEG bytes, end to end (one shared buffer)
    spans: list[tuple[int, int]] = field(default_factory=list)  # each one's [start, end) in blob
    at: list[int] = field(default_factory=list)  # the batch position of each of them
    boxes: list[list[tuple[int, int, int, int]]] = field(default_factory=list)  # their boxes, one per view
    cpu: list[tuple[int, list[torch.Tensor]]] = field(default_factory=list)  # (position, view crops [3, s, s])
    bad: list[Entry] = field(default_factory=list)


class EncodedTrainBatches(TrainBatches):
    """key (epoch, rows) -> EncodedBatch (runs in the DataLoader workers)."""

    def __getitem__(self, key: tuple[int, np.ndarray]) -> EncodedBatch:
        epoch, rows = key
        out = EncodedBatch(epoch, np.asarray(rows), torch.empty(len(rows), dtype=torch.int64))
        parts, end = [], 0
        for k, i in enumerate(int(r) for r in rows):
            try:
                data = self.reader.read(i)
            except Exception:  # the CPU path below meets the same error and lists it
                data = b""
            size = nvjpeg_size(data) if data else None
            if size is None:
                crops, out.labels[k] = self.sample_crops(i, epoch, out.bad)
                out.cpu.append((k, [torch.from_numpy(c.copy()).permute(2, 0, 1).contiguous() for c in crops]))
                continue
            parts.append(data)
            out.spans.append((end, end + len(data)))
            end += len(data)
            out.at.append(k)
            out.boxes.append(self.boxes(i, epoch, *size))
            out.labels[k] = int(self.index.rows[i]["label"])
        # One tensor for the whole batch: one shared-memory segment on the way to the main process, not one each.
        out.blob = torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8) if parts else None
        return out

    @staticmethod
    def files(batch: EncodedBatch) -> list[torch.Tensor]:
        """The JPEG bytes of each device-decoded sample (views into the batch's blob)."""
        return [batch.blob[a:b] for a, b in batch.spans]


def crop_resize(img: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """uint8 [3, size, size] of `box` (left, top, right, bottom) of a uint8 [3, H, W] image, resized with
    antialiased bilinear interpolation (PIL's filter on the CPU path)."""
    left, top, right, bottom = box
    x = img[None, :, top:bottom, left:right].float()
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y[0].round_().clamp_(0, 255).to(torch.uint8)


def _decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """[3, H, W] uint8 images on the device; None for a file that does not decode."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not data:
        return []
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # one bad file fails the whole call: decode them one by one
        out: list[torch.Tensor | None] = []
        for d in data:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


class DeviceDecoder:
    """EncodedBatch -> (per recipe uint8 [n*B, 3, size, size] on the device, labels, unreadable entries): what
    TrainBatches returns, made on `device`. `fallback` is the CPU path for files the device cannot decode."""

    def __init__(self, fallback: TrainBatches, device: torch.device | str):
        self.fallback, self.device = fallback, torch.device(device)
        self.sizes = [spec.size for spec in fallback.specs for _ in range(spec.n)]

    def __call__(self, batch: EncodedBatch) -> tuple[list[torch.Tensor], torch.Tensor, list[Entry]]:
        b = len(batch.rows)
        out = [torch.empty((s.n * b, 3, s.size, s.size), dtype=torch.uint8, device=self.device)
               for s in self.fallback.specs]
        labels, bad = batch.labels.clone(), list(batch.bad)
        for k, crops in batch.cpu:
            self.fallback.place(out, k, b, [c.to(self.device, non_blocking=True) for c in crops])
        for k, boxes, img in zip(batch.at, batch.boxes, _decode(EncodedTrainBatches.files(batch), self.device)):
            if img is None:  # corrupt after a readable header: the CPU path, its replacement and its listing
                crops, labels[k] = self.fallback.sample_crops(int(batch.rows[k]), batch.epoch, bad)
                self.fallback.place(out, k, b, [torch.from_numpy(c.copy()).permute(2, 0, 1).to(self.device)
                                                for c in crops])
                continue
            self.fallback.place(out, k, b, [crop_resize(img, box, size) for box, size in zip(boxes, self.sizes)])
        return out, labels, bad


class DeviceDecoded:
    """A loader of EncodedBatch turned into the CPU loader's (crops, labels, bad) items, crops on the device."""

    def __init__(self, loader: Iterable[EncodedBatch], decoder: DeviceDecoder):
        self.loader, self.decoder = loader, decoder

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor, list[Entry]]]:
        for batch in self.loader:
            yield self.decoder(batch)
