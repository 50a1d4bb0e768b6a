"""A cached streaming index is never stale or wrong without a word: freshness covers every folder level the index
walks, and a cache whose files do not fit is rebuilt, never a traceback."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from ssl_zoo.data.streaming import synthetic
from ssl_zoo.data.streaming.index import load_index

CLASSES = ["c000", "c001"]


def _touch_later(path) -> None:
    """A new mtime even on file systems with coarse timestamps."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def _image(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


@pytest.fixture
def split(tmp_path):
    synthetic.write_folder(tmp_path / "d", CLASSES, 2, 1, sizes=(40, 60))
    for depth in ("a", "a/b"):  # nested subfolders of a class, a common layout of user datasets
        _image(tmp_path / "d" / "train" / "c001" / depth / "x.jpg")
    return tmp_path / "d" / "train"


def _load(split, cache):
    return load_index(split, "folder", cache, CLASSES)


@pytest.mark.parametrize("where", ["c000", "c001/a", "c001/a/b"])
def test_an_image_added_at_any_folder_level_is_seen(split, tmp_path, where):
    cache = tmp_path / "cache"
    assert len(_load(split, cache)) == 6 and isinstance(_load(split, cache).rows, np.memmap)
    _image(split / where / "new.jpg")
    _touch_later(split / where)
    again = _load(split, cache)
    assert len(again) == 7 and not isinstance(again.rows, np.memmap)
    assert any(again.file_path(i).name == "new.jpg" for i in range(len(again)))


def test_a_new_nested_folder_and_a_removed_image_are_seen(split, tmp_path):
    cache = tmp_path / "cache"
    _load(split, cache)
    _image(split / "c000" / "deep" / "er" / "new.jpg")
    _touch_later(split / "c000")
    assert len(_load(split, cache)) == 7
    (split / "c001" / "a" / "b" / "x.jpg").unlink()
    _image(split / "c001" / "a" / "b" / "y.jpg")  # the folder keeps an image: only a name changed
    _touch_later(split / "c001" / "a" / "b")
    names = {_load(split, cache).file_path(i).name for i in range(7)}
    assert "y.jpg" in names and "x.jpg" in names  # x.jpg of c001/a is still there


def _cache_folder(cache):
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    return folder


def _bad_rows(rows):
    return {
        "another dtype": rows.astype([("file", "<i8"), ("offset", "<i8"), ("size", "<i8"), ("label", "<i8")]),
        "plain ints": np.arange(len(rows)),
        "2-d": np.stack([rows, rows]),
        "fewer rows": rows[:-1],
        "empty": rows[:0],
        "file out of range": _with(rows, "file", 99),
        "label out of range": _with(rows, "label", 7),
        "negative label": _with(rows, "label", -1),
    }


def _with(rows, field, value):
    out = np.array(rows)
    out[field][0] = value
    return out


def test_a_cache_whose_rows_do_not_fit_is_rebuilt(split, tmp_path):
    cache = tmp_path / "cache"
    good = np.array(_load(split, cache).rows)
    folder = _cache_folder(cache)
    for case, bad in _bad_rows(good).items():
        np.save(folder / "rows.npy", bad)
        index = _load(split, cache)
        assert not isinstance(index.rows, np.memmap), case
        assert np.array_equal(index.rows, good), case
        assert isinstance(_load(split, cache).rows, np.memmap), case  # the rebuilt cache is used again


def _corruptions(folder):
    meta = json.loads((folder / "meta.json").read_text())
    return {
        "older format": lambda: (folder / "meta.json").write_text(json.dumps({**meta, "format": 1})),
        "no format": lambda: (folder / "meta.json").write_text(json.dumps({k: v for k, v in meta.items()
                                                                          if k != "format"})),
        "meta not a dict": lambda: (folder / "meta.json").write_text("[1, 2]"),
        "meta not json": lambda: (folder / "meta.json").write_text("{"),
        "count of another index": lambda: (folder / "meta.json").write_text(json.dumps({**meta, "count": 3})),
        "classes not a list": lambda: (folder / "meta.json").write_text(json.dumps({**meta, "classes": 5})),
        "pickled objects": lambda: np.save(folder / "names.npy", np.array([object()]), allow_pickle=True),
        "offsets past the names": lambda: np.save(folder / "name_offsets.npy", np.arange(7, dtype=np.int64) * 999),
        "offsets of another dtype": lambda: np.save(folder / "name_offsets.npy",
                                                    np.load(folder / "name_offsets.npy").astype(np.int32)),
        "truncated rows": lambda: (folder / "rows.npy").write_bytes((folder / "rows.npy").read_bytes()[:90]),
        "rows missing": lambda: (folder / "rows.npy").unlink(),
        "a file where the cache was": lambda: shutil.rmtree(folder) or folder.write_text("x"),
    }


@pytest.mark.parametrize("case", ["older format", "no format", "meta not a dict", "meta not json",
                                  "count of another index", "classes not a list", "pickled objects",
                                  "offsets past the names", "offsets of another dtype", "truncated rows",
                                  "rows missing", "a file where the cache was"])
def test_a_damaged_or_foreign_cache_is_rebuilt_not_a_traceback(split, tmp_path, case):
    cache = tmp_path / "cache"
    good = np.array(_load(split, cache).rows)
    folder = _cache_folder(cache)
    _corruptions(folder)[case]()
    index = _load(split, cache)
    assert not isinstance(index.rows, np.memmap) and np.array_equal(index.rows, good)
    assert isinstance(_load(split, cache).rows, np.memmap)  # and the cache is whole again


def test_webdataset_cache_is_checked_too(tmp_path):
    synthetic.write_folder(tmp_path / "f", CLASSES, 3, 1, sizes=(40, 60))
    synthetic.folder_to_shards(tmp_path / "f", tmp_path / "s", per_shard=2)
    cache, split = tmp_path / "cache", tmp_path / "s" / "train"
    good = np.array(load_index(split, "webdataset", cache).rows)
    np.save(_cache_folder(cache) / "rows.npy", _with(good, "file", 50))
    index = load_index(split, "webdataset", cache)
    assert np.array_equal(index.rows, good) and not isinstance(index.rows, np.memmap)
    assert isinstance(load_index(split, "webdataset", cache).rows, np.memmap)
