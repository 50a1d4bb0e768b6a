"""The digits split read from the cache is sklearn's split, and a bad or unwritable cache changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_zoo.data import digits


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _same(a: dict, b: dict) -> bool:
    return all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in digits.SPLIT)


def test_the_cached_split_is_sklearns_split(cache):
    reference = digits._split_with_sklearn()
    first = digits.digits_split()  # made and written
    assert digits.cache_file().is_file() and digits.cache_file().is_relative_to(cache)
    second = digits.digits_split()  # read back
    assert _same(first, reference) and _same(second, reference)
    assert len(second["train_x"]) == 1347 and len(second["test_x"]) == 450


@pytest.mark.parametrize("content", [b"", b"not an npz", b"PK\x03\x04truncated"])
def test_a_damaged_cache_is_made_again(cache, content):
    path = digits.cache_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert _same(digits.digits_split(), digits._split_with_sklearn())
    assert digits._read(path) is not None  # rewritten whole


def test_a_cache_of_the_wrong_shape_is_not_used(cache):
    path = digits.cache_file()
    path.parent.mkdir(parents=True)
    split = digits._split_with_sklearn()
    np.savez(path, **{**split, "test_y": split["test_y"][:10]})
    assert digits._read(path) is None
    assert _same(digits.digits_split(), split)


def test_an_unwritable_cache_is_ignored(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("SSL_ZOO_CACHE", str(blocker / "cache"))
    assert _same(digits.digits_split(), digits._split_with_sklearn())
