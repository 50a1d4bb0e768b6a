"""Loading a dataset from its config: the small ones whole into memory (data.in_memory.ImageData), image folders
and shards streamed (data.streaming.loader.StreamedData); both are data.source.DataSource."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ssl_zoo.common.errors import UserError
from ssl_zoo.data.in_memory import ImageData
from ssl_zoo.data.source import DataSource


def _nchw(array: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.array(array, copy=True))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif t.shape[-1] in (1, 3):  # NHWC -> NCHW
        t = t.permute(0, 3, 1, 2).contiguous()
    return t.to(torch.uint8)


def load_digits_data() -> ImageData:
    from ssl_zoo.data.digits import digits_split

    s = digits_split()
    return ImageData(_nchw(s["train_x"]), torch.as_tensor(s["train_y"]), _nchw(s["test_x"]),
                     torch.as_tensor(s["test_y"]), 10)


def read_idx(path: Path) -> np.ndarray:
    """An MNIST-style idx file (optionally .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not a uint8 idx file")
        shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, EOFError, ValueError, struct.error, zlib.error) as err:
        raise UserError(f"cannot read {path}: {err} (the file is corrupt or truncated; re-download it)") from err


def _find_idx(root: Path, stem: str) -> Path:
    for folder in (root, root / "raw", root / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise UserError(f"Fashion-MNIST file {stem}[.gz] not found under {root} "
                    "(apt-get install dataset-fashion-mnist, or set data.root to a torchvision FashionMNIST root)")


def load_fashion_mnist(root: Path) -> ImageData:
    parts = []
    for split in ("train", "t10k"):
        for kind, ndim in (("images", 3), ("labels", 1)):
            path = _find_idx(root, f"{split}-{kind}-idx{ndim}-ubyte")
            array = read_idx(path)
            if array.ndim != ndim or (kind == "images" and array.shape[1:] != (28, 28)):
                raise UserError(f"{path} holds an array of shape {tuple(array.shape)}, not "
                                f"{'N x 28 x 28 images' if kind == 'images' else 'N labels'} (the wrong file?)")
            parts.append(array)
    xtr, ytr, xte, yte = parts
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise UserError(f"Fashion-MNIST under {root} has mismatched image/label counts (truncated files?)")
    return ImageData(_nchw(xtr), torch.as_tensor(ytr.astype(np.int64)), _nchw(xte),
                     torch.as_tensor(yte.astype(np.int64)), 10)


def _torchvision(cls, root: Path, download: bool, **split) -> tuple[np.ndarray, np.ndarray]:
    try:
        ds = cls(str(root), download=download, **split)
    except RuntimeError as err:
        raise UserError(f"{cls.__name__} not found under {root}: {err} (set data.root, or data.download=true "
                        "with a network)") from err
    except OSError as err:  # urllib's URLError (no network), a full disk, an unwritable root
        reason = getattr(err, "reason", None) or err.strerror or err
        raise UserError(f"cannot {'download' if download else 'read'} {cls.__name__} into {root}: {reason}"
                        + (" (no network? put the files under data.root and set data.download=false)"
                           if download else "")) from err
    except (ValueError, EOFError, pickle.UnpicklingError) as err:  # a damaged batch file that passed the checksum
        raise UserError(f"{cls.__name__} under {root} is unreadable ({type(err).__name__}); re-download it") from err
    labels = getattr(ds, "targets", None)
    labels = ds.labels if labels is None else labels
    return ds.data, np.asarray(labels, dtype=np.int64)


def load_torchvision_data(name: str, root: Path, download: bool) -> ImageData:
    import torchvision.datasets as tvd

    if name in ("cifar10", "cifar100"):
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        (xtr, ytr), (xte, yte) = (_torchvision(cls, root, download, train=t) for t in (True, False))
        return ImageData(_nchw(xtr), torch.as_tensor(ytr), _nchw(xte), torch.as_tensor(yte), 10 if name == "cifar10" else 100)
    (xtr, ytr), (xte, yte), (xun, _) = (_torchvision(tvd.STL10, root, download, split=s)
                                        for s in ("train", "test", "unlabeled"))
    return ImageData(_nchw(xtr), torch.as_tensor(ytr), _nchw(xte), torch.as_tensor(yte), 10, _nchw(xun))


def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL's errors for bad files
        reason = (str(err).splitlines() or [""])[0][:100] or type(err).__name__
        raise UserError(f"cannot decode image {path}: {reason} (a corrupt, empty or truncated file; replace or "
                        "remove it)") from err


def load_image_folder(root: Path, size: int, classes: list[str] | None = None) -> ImageData:
    """root/train/<class>/* and root/val/<class>/*, decoded and resized once to size x size RGB. Class ids are
    those of the streamed path (ssl_zoo.data.streaming.index): train/'s sorted class folders (or data.classes), the
    same ids for val/, whose classes must be among them."""
    from ssl_zoo.data.streaming.index import build_folder_index, folder_classes

    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(f"image folder {root} needs {split}/<class>/ sub-folders")
    names = folder_classes(root / "train", classes)
    splits = []
    for split in ("train", "val"):
        index = build_folder_index(root / split, names, is_train=split == "train")
        if len(index) == 0:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise UserError(f"{root / split} holds no images in the class folders ({shown})")
        images = np.stack([_decode(index.file_path(int(f)), size) for f in index.rows["file"]])
        splits.append((_nchw(images), torch.from_numpy(index.labels())))
    (xtr, ytr), (xte, yte) = splits
    return ImageData(xtr, ytr, xte, yte, len(names))


def check_labels(data: DataSource, name: str, declared: int | None) -> None:
    """Labels a probe can score: both splits non-empty, every label in [0, num_classes) (and below the
    dataset's declared data.num_classes). A label outside would be scored as a wrong answer, or crash."""
    k = int(data.num_classes)
    if declared is not None and k > int(declared):
        raise UserError(f"{name} has {k} classes but data.num_classes={declared}; fix the data or the setting")
    for split, x, y in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        if len(y) == 0:
            raise UserError(f"the {name} {split} split is empty: nothing to {'train' if split == 'train' else 'score'}"
                            " on")
        if len(x) != len(y):
            raise UserError(f"the {name} {split} split has {len(x)} images but {len(y)} labels")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= k:
            raise UserError(f"the {name} {split} labels run from {low} to {high}, outside the {k} classes "
                            f"0..{k - 1}; fix the labels (or data.num_classes)")


STREAMABLE = ("imagefolder", "imagenet", "imagenet100", "webdataset")  # streamed unless data.stream=false


def load_data(cfg) -> DataSource:
    """cfg is the `data` config node. Image folders and shards come back streamed (ssl_zoo.data.streaming.loader's
    StreamedData, the same fields with lazily decoded images) unless data.stream=false."""
    name = str(cfg.name)
    root = Path(str(cfg.root)).expanduser() if cfg.get("root") not in (None, "???") else None
    if name == "digits":
        data = load_digits_data()
    elif name == "fashion_mnist":
        data = load_fashion_mnist(root)
    elif name in ("cifar10", "cifar100", "stl10"):
        data = load_torchvision_data(name, root, bool(cfg.download))
    elif name in STREAMABLE:
        if root is None:
            raise UserError(f"data={name} needs data.root=<folder with train/ and val/>")
        if cfg.get("stream", True):
            from ssl_zoo.data.streaming.loader import load_streamed

            if int(cfg.channels) != 3:
                raise UserError(f"data.channels={cfg.channels}: streamed images are decoded as RGB; set 3")
            data = load_streamed(cfg)  # data.train_subset is applied there (a class-balanced subset)
            check_labels(data, name, cfg.get("num_classes"))
            return data
        if cfg.get("format", "folder") != "folder":
            raise UserError("data.stream=false decodes image folders only; stream WebDataset shards")
        data = load_image_folder(root, int(cfg.image_size), list(cfg.classes) if cfg.get("classes") else None)
    else:
        raise UserError(f"unknown dataset '{name}'")
    check_labels(data, name, cfg.get("num_classes"))
    n = cfg.get("train_subset")  # set by experiments on a budget (collapse_study): the first n labelled images
    if n is not None:
        data = replace(data, train_x=data.train_x[:int(n)], train_y=data.train_y[:int(n)])
    if data.train_x.shape[1] != int(cfg.channels):
        raise UserError(f"data.channels={cfg.channels} but {name} images have {data.train_x.shape[1]} channels")
    return data


def check_data_root(cfg: DictConfig) -> None:
    """A dataset that lives in a user folder needs that folder (checked before a run writes anything)."""
    d = cfg.data
    if d.name == "digits" or d.download:
        return
    if d.root is None:
        raise UserError(f"data={d.name} needs data.root=<folder with the {d.name} files>")
    root = Path(str(d.root)).expanduser()
    if not root.exists():
        raise UserError(f"data.root={root} does not exist; set data.root to the folder holding {d.name}"
                        + (" (or data.download=true with a network)" if d.name != "imagefolder" else ""))
    if not root.is_dir():
        raise UserError(f"data.root={root} is a file, not a folder; set data.root to the folder holding {d.name}")
    if not os.access(root, os.R_OK | os.X_OK):
        raise UserError(f"data.root={root} cannot be read (permissions); fix them or copy the data elsewhere")
