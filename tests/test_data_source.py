"""One data interface (ssl_zoo.data.source.DataSource) for data held in memory and streamed data: both kinds
implement it and give the same kinds of batches, and no caller tells them apart by asking for attributes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ssl_zoo.data.in_memory import ImageData
from ssl_zoo.data.source import DataSource, LabelledCrop
from ssl_zoo.data.streaming import synthetic
from ssl_zoo.data.streaming.loader import load_streamed
from ssl_zoo.data.views import CropRecipe, ViewMaker

ROOT = Path(__file__).resolve().parents[1]
VIEWS = ViewMaker([CropRecipe(n=2, size=16)], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    synthetic.write_folder(root / "folder", ["c000", "c001"], 6, 3, odd=True, sizes=(40, 90))
    node = {"root": str(root / "folder"), "image_size": 16, "workers": 0, "train_subset": None,
            "max_bad_fraction": 0.5, "index_dir": str(root / "index")}
    return load_streamed(OmegaConf.create(node))


def in_memory() -> ImageData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.arange(20) % 2
    return ImageData(x[:14], y[:14], x[14:], y[14:], 2, unlabeled_x=x[:4])


def both(streamed) -> list[DataSource]:
    return [in_memory(), streamed]


def test_both_kinds_implement_the_interface(streamed):
    for data in both(streamed):
        assert isinstance(data, DataSource), type(data).__name__
    assert in_memory().in_memory and not streamed.in_memory
    assert in_memory().num_pretrain_images == 14 + 4 and streamed.num_pretrain_images == len(streamed.pretrain_rows)


def test_both_kinds_give_the_same_kinds_of_batches(streamed):
    crop = LabelledCrop(12, (0.2, 1.0), (3 / 4, 4 / 3), 0.5)
    for data in both(streamed):
        kind = type(data).__name__
        chunks = list(data.image_batches(data.test_x, 4))
        assert sum(len(c) for c in chunks) == len(data.test_x) and chunks[0].dtype == torch.uint8, kind
        views = list(data.labelled_views(data.train_x[:8], data.train_y[:8], crop, 0, 0, 5,
                                         torch.Generator().manual_seed(0), "cpu"))
        assert [len(y) for _, y in views] == [5, 3] and views[0][0].shape == (5, 3, 12, 12), kind
        pretrain = data.pretrain_input(VIEWS, torch.device("cpu"), 0, 4, 0, 1, None)
        x, y = next(pretrain.batches(0, range(1)))
        assert len(y) == 4 and pretrain.bad_data_error is None, kind
        assert all(isinstance(b, tuple) and len(b) == 3 for b in data.take_bad()), kind
    assert in_memory().take_bad() == []


def test_training_evaluation_and_launch_never_ask_for_attributes():
    """Which kind of data a caller holds is the data's business (DataSource), never hasattr()."""
    found = [f"{path.relative_to(ROOT)}:{n}" for folder in ("train", "evaluation", "launch")
             for path in sorted((ROOT / "ssl_zoo" / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"\bhasattr\(", line)]
    assert found == []
