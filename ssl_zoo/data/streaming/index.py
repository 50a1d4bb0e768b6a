"""One row per sample (file or tar shard, byte offset, size, label), built once and cached as .npy files
(index_cache.py).

The rows live in a numpy structured array (memory-mapped when loaded from the cache), never in Python lists of
tuples: DataLoader workers forked from the trainer then share the pages instead of copying them as Python's
reference counts touch every object. File names are one uint8 blob plus offsets, for the same reason.

Layouts: `folder` (root/<split>/<class>/**/<image>, class ids from the sorted class folders of train/) and
`webdataset` (root/<split>/*.tar with members <key>.jpg|.jpeg|.png|.webp and <key>.cls holding the label).
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssl_zoo.common.errors import UserError
from ssl_zoo.data.streaming import index_cache

default_cache_dir = index_cache.default_cache_dir  # callers import it from here

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
TAR_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
ROW = np.dtype([("file", "<i4"), ("offset", "<i8"), ("size", "<i8"), ("label", "<i4")])  # size -1: whole file


@dataclass
class Index:
    split_dir: Path
    layout: str  # folder | webdataset
    classes: list[str]  # class names (folder) or label numbers as text (webdataset)
    rows: np.ndarray  # ROW records, one per sample
    names: np.ndarray  # uint8 blob of file names relative to split_dir (utf-8)
    name_offsets: np.ndarray  # int64 [files + 1]

    def __len__(self) -> int:
        return len(self.rows)

    def file_path(self, file: int) -> Path:
        return self.split_dir / bytes(self.names[self.name_offsets[file]:self.name_offsets[file + 1]]).decode()

    def labels(self) -> np.ndarray:
        return np.asarray(self.rows["label"], dtype=np.int64)


def _pack_names(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [n.encode() for n in names]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


# --- building ---------------------------------------------------------------------------------------------
def _scan_folder_split(split_dir: Path, classes: list[str], allow_missing: bool) -> tuple[list[str], list[int]]:
    names: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        folder = split_dir / cls
        if not folder.is_dir():
            if allow_missing:
                continue
            raise UserError(f"{split_dir} has no class folder {cls!r}")
        found = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=_raise_unreadable):
            dirnames.sort()
            rel = os.path.relpath(dirpath, split_dir)
            found += [os.path.join(rel, f) for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise UserError(f"class folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            "remove it or add its images")
        names += found
        labels += [label] * len(found)
    return names, labels


def _raise_unreadable(err: OSError) -> None:
    raise UserError(f"cannot read {err.filename}: {err.strerror}")


def _class_folders(split_dir: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    except OSError as err:
        raise UserError(f"cannot read {split_dir}: {err.strerror}") from err


def build_folder_index(split_dir: Path, classes: list[str], is_train: bool) -> Index:
    if not is_train:  # val/ takes train/'s class ids; a class train/ lacks has no id (one outside data.classes
        # is left out of val/ as it is of train/)
        extra = sorted(set(_class_folders(split_dir)) - set(_class_folders(split_dir.parent / "train")))
        if extra:
            raise UserError(f"{split_dir} has class folder {extra[0]!r} that train/ lacks "
                            f"({len(extra)} such); val classes must be a subset of train classes")
    names, labels = _scan_folder_split(split_dir, classes, allow_missing=not is_train)
    rows = np.zeros(len(names), dtype=ROW)
    rows["file"] = np.arange(len(names))
    rows["size"] = -1
    rows["label"] = labels
    blob, offsets = _pack_names(names)
    return Index(split_dir, "folder", classes, rows, blob, offsets)


def _tar_members(path: Path) -> dict[str, dict[str, tarfile.TarInfo]]:
    """{key: {extension: member}} in the shard's order (WebDataset: the key is the name up to the basename's
    first dot, the extension the rest, lower-cased)."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                head, _, base = m.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if dot:
                    samples.setdefault(f"{head}/{stem}" if head else stem, {})[ext.lower()] = m
    except (OSError, tarfile.TarError) as err:
        raise UserError(f"cannot read shard {path}: {err}") from err
    return samples


def build_webdataset_index(split_dir: Path) -> Index:
    shards = sorted(p.name for p in split_dir.glob("*.tar"))
    if not shards:
        raise UserError(f"{split_dir} has no .tar shards")
    rows: list[tuple[int, int, int, int]] = []
    for file, name in enumerate(shards):
        with open(split_dir / name, "rb") as raw:
            for key, members in _tar_members(split_dir / name).items():
                image = next((members[e] for e in TAR_IMAGE_EXTENSIONS if e in members), None)
                if image is None:
                    continue
                if "cls" not in members:
                    raise UserError(f"sample {key!r} in {split_dir / name} has no .cls member (its label)")
                raw.seek(members["cls"].offset_data)
                text = raw.read(members["cls"].size).decode(errors="replace").strip()
                if not text.isdigit():
                    raise UserError(f"{key}.cls in {split_dir / name} holds {text[:20]!r}, not a class number")
                rows.append((file, image.offset_data, image.size, int(text)))
    if not rows:
        raise UserError(f"the shards in {split_dir} hold no images (<key>.jpg|jpeg|png|webp with <key>.cls)")
    array = np.array(rows, dtype=ROW)
    blob, offsets = _pack_names(shards)
    return Index(split_dir, "webdataset", [], array, blob, offsets)


def load_index(split_dir: Path, layout: str, cache_dir: Path | None, classes: list[str] | None = None,
               is_train: bool = True) -> Index:
    """The split's index from the cache when the folder is unchanged and the cache fits, else built (and
    cached)."""
    try:
        sig = index_cache.signature(split_dir, layout)
    except OSError as err:
        raise UserError(f"cannot read {err.filename or split_dir}: {err.strerror}") from err
    folder = index_cache.cache_folder(cache_dir, split_dir, layout, classes) if cache_dir is not None else None
    if folder is not None:
        cached = index_cache.read_cached(folder, sig, layout, classes, ROW)
        if cached is not None:
            meta, arrays = cached
            return Index(split_dir, layout, list(meta["classes"]), arrays["rows"], arrays["names"],
                         arrays["name_offsets"])
    if layout == "folder":
        index = build_folder_index(split_dir, classes, is_train)
    else:
        index = build_webdataset_index(split_dir)
    if folder is not None:
        arrays = {"rows": index.rows, "names": index.names, "name_offsets": index.name_offsets}
        index_cache.save(folder, arrays, {"signature": sig, "layout": index.layout, "classes": index.classes,
                                          "count": len(index), "split_dir": str(index.split_dir)})
    return index


def folder_classes(train_dir: Path, subset: list[str] | None) -> list[str]:
    """train/'s sorted class folders, or the given subset (each must exist in train/)."""
    found = _class_folders(train_dir)
    if not found:
        raise UserError(f"{train_dir} has no class folders (expected {train_dir}/<class>/<image>)")
    if subset is None:
        return found
    missing = sorted(set(subset) - set(found))
    if missing:
        raise UserError(f"{len(missing)} class(es) of data.classes are not folders of {train_dir}, "
                        f"e.g. {missing[0]!r}")
    return sorted(set(subset))
