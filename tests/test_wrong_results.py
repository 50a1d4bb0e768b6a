"""No wrong number without an error: class ids of image folders, eval overrides and saved configs held to the
training ranges, labels outside the class range, and data faults reported in one line before anything is
written."""

from __future__ import annotations

import functools
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ssl_zoo.cli import main
from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.data.datasets import ImageData, check_labels, load_data, load_fashion_mnist
from ssl_zoo.evaluation.probes import knn_top1
from ssl_zoo.runs.checkpoint import save_checkpoint
from ssl_zoo.runs.identity import run_dir_for

from tiny import tiny_overrides

COLOURS = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cat": (0, 0, 255)}


def _image_folder(root: Path, train: tuple[str, ...], val: tuple[str, ...], per_class: int = 3) -> Path:
    """A perfectly separable folder: every image of a class is one flat colour."""
    for split, classes in (("train", train), ("val", val)):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (12, 10), COLOURS[name]).save(folder / f"{i}.png")
    return root


@functools.lru_cache
def _config(*overrides: str):
    return load_config(tiny_overrides("unused", *overrides))


def _data_cfg(root: Path, tmp_path: Path, stream: bool):
    data = _config("data=imagefolder", "data.root=unused", "data.image_size=8", "data.workers=0").data.copy()
    data.root, data.stream, data.index_dir = str(root), stream, str(tmp_path / "index")
    return data


def _pixels(x) -> torch.Tensor:
    x = x.to("cpu") if not isinstance(x, torch.Tensor) else x  # streamed images decode on .to()
    return x.flatten(1).float()


@pytest.mark.parametrize("stream", [False, True])
def test_val_with_a_subset_of_train_classes_keeps_train_ids(tmp_path, stream):
    root = _image_folder(tmp_path / "folder", ("ant", "bee", "cat"), ("bee", "cat"))
    data = load_data(_data_cfg(root, tmp_path, stream))
    assert data.num_classes == 3
    assert sorted(data.test_y.tolist()) == [1, 1, 1, 2, 2, 2]  # bee and cat keep train/'s ids 1 and 2
    score = knn_top1(_pixels(data.train_x), data.train_y, _pixels(data.test_x), data.test_y, k=1, num_classes=3)
    assert score == 100.0  # the separable set scores 100%, not the 50% (or 0%) of per-split class ids


@pytest.mark.parametrize("stream", [False, True])
def test_a_val_class_absent_from_train_is_an_error(tmp_path, stream):
    root = _image_folder(tmp_path / "folder", ("ant", "bee"), ("bee", "cat"))
    with pytest.raises(UserError, match="'cat' that train/ lacks"):
        load_data(_data_cfg(root, tmp_path, stream))


@pytest.mark.parametrize("stream", [False, True])
def test_a_class_subset_numbers_both_splits_by_the_subset(tmp_path, stream):
    root = _image_folder(tmp_path / "folder", ("ant", "bee", "cat"), ("ant", "bee", "cat"))
    cfg = _data_cfg(root, tmp_path, stream)
    cfg.classes = ["cat", "bee"]  # imagenet100 from a full ImageNet folder: val/ holds every class too
    data = load_data(cfg)
    assert data.num_classes == 2 and len(data.train_y) == 6
    assert sorted(data.test_y.tolist()) == [0, 0, 0, 1, 1, 1]  # bee 0, cat 1; ant left out of both splits
    score = knn_top1(_pixels(data.train_x), data.train_y, _pixels(data.test_x), data.test_y, k=1, num_classes=2)
    assert score == 100.0


@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_val_split_is_an_error(tmp_path, stream):
    root = _image_folder(tmp_path / "folder", ("ant", "bee"), ())
    (root / "val").mkdir()
    with pytest.raises(UserError, match=f"{root / 'val'} holds no images|test split is empty"):
        load_data(_data_cfg(root, tmp_path, stream))


def _decode_once_train(tmp_path: Path, root: Path, capsys) -> str:
    """`ssl-zoo train` on a decode-once folder: exit 2, the one stderr line, and no run directory."""
    out = tmp_path / "runs"
    args = [*tiny_overrides(out), "data=imagefolder", f"data.root={root}", "data.image_size=8", "data.stream=false",
            "eval.enabled=false"]
    capsys.readouterr()
    assert main(["train", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssl-zoo: error: ") and "Traceback" not in captured.err
    assert not out.exists()  # checked before the run directory is created
    return lines[0]


@pytest.mark.parametrize("fault", ["random_bytes", "zero_bytes", "truncated_png", "truncated_jpeg"])
def test_a_bad_image_is_one_line_naming_it(tmp_path, capsys, fault):
    """Through `ssl-zoo train` once (nothing written); the other faults through the loader itself."""
    root = _image_folder(tmp_path / "folder", ("ant", "bee"), ("ant", "bee"))
    good = (root / "train" / "bee" / "1.png").read_bytes()
    bad = root / "train" / "bee" / ("1.jpg" if fault == "truncated_jpeg" else "1.png")
    if fault == "truncated_jpeg":
        (root / "train" / "bee" / "1.png").unlink()
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(bad, quality=90)
        bad.write_bytes(bad.read_bytes()[:2000])  # past the header, inside the scan data
    else:
        bad.write_bytes({"random_bytes": np.random.default_rng(0).bytes(500), "zero_bytes": b"",
                         "truncated_png": good[: len(good) // 2]}[fault])
    if fault == "random_bytes":
        assert f"cannot decode image {bad}" in _decode_once_train(tmp_path, root, capsys)
    else:
        with pytest.raises(UserError, match=f"cannot decode image {bad}"):
            load_data(_data_cfg(root, tmp_path, stream=False))


def test_an_empty_class_folder_is_one_line_naming_it(tmp_path, capsys):
    root = _image_folder(tmp_path / "folder", ("ant", "bee"), ("ant", "bee"))
    (root / "train" / "cow").mkdir()
    line = _decode_once_train(tmp_path, root, capsys)
    assert f"class folder {root / 'train' / 'cow'} has no images" in line


def test_labels_outside_the_class_range_are_errors():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    ok = torch.tensor([0, 1, 2, 1])
    check_labels(ImageData(x, ok, x, ok, 3), "toy", 3)
    for bad in (torch.tensor([0, 1, 3, 1]), torch.tensor([0, -1, 2, 1])):
        with pytest.raises(UserError, match="test labels run from"):
            check_labels(ImageData(x, ok, x, bad, 3), "toy", 3)
        with pytest.raises(UserError, match="train labels run from"):
            check_labels(ImageData(x, bad, x, ok, 3), "toy", 3)
    with pytest.raises(UserError, match="test split is empty"):
        check_labels(ImageData(x, ok, x[:0], ok[:0], 3), "toy", 3)
    with pytest.raises(UserError, match="4 images but 3 labels"):
        check_labels(ImageData(x, ok[:3], x, ok, 3), "toy", 3)
    with pytest.raises(UserError, match="data.num_classes=2"):
        check_labels(ImageData(x, ok, x, ok, 3), "toy", 2)


def _idx(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _fashion(root: Path, **replace: np.ndarray) -> Path:
    """Small valid Fashion-MNIST idx files, some of them replaced."""
    root.mkdir()
    files = {"train-images-idx3-ubyte": np.zeros((6, 28, 28), np.uint8), "train-labels-idx1-ubyte": np.arange(6) % 3,
             "t10k-images-idx3-ubyte": np.zeros((4, 28, 28), np.uint8), "t10k-labels-idx1-ubyte": np.arange(4) % 3}
    for stem, array in {**files, **replace}.items():
        (root / stem).write_bytes(_idx(np.asarray(array, dtype=np.uint8)))
    return root


def test_fashion_mnist_files_of_the_wrong_shape_or_labels(tmp_path):
    assert len(load_fashion_mnist(_fashion(tmp_path / "ok")).test_y) == 4
    cases = {
        "labels_2d": ({"t10k-labels-idx1-ubyte": np.zeros((4, 2))}, "t10k-labels-idx1-ubyte holds an array of shape"),
        "images_32px": ({"train-images-idx3-ubyte": np.zeros((6, 32, 32))}, "not N x 28 x 28 images"),
        "images_flat": ({"train-images-idx3-ubyte": np.zeros(6 * 784)}, "train-images-idx3-ubyte holds"),
        "label_12": ({"t10k-labels-idx1-ubyte": np.array([0, 1, 12, 2])}, "test labels run from 0 to 12"),
        "no_test_images": ({"t10k-images-idx3-ubyte": np.zeros((0, 28, 28)),
                            "t10k-labels-idx1-ubyte": np.zeros(0)}, "test split is empty"),
    }
    for name, (replace, message) in cases.items():
        data = _config("data=fashion_mnist").data.copy()
        data.root = str(_fashion(tmp_path / name, **replace))
        with pytest.raises(UserError, match=message):
            load_data(data)


def test_download_without_a_network_is_one_line(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data = _config("data=cifar10").data.copy()
    data.root, data.download = str(tmp_path / "cifar"), True
    with pytest.raises(UserError, match="cannot download CIFAR10 into .*name resolution.*no network"):
        load_data(data)


# --- `ssl-zoo eval`: overrides and saved configs held to the ranges training uses ---------------------------
@pytest.fixture
def saved_run(tmp_path):
    """A run directory with its config, a finished results.json and a checkpoint (never loaded into a model:
    every refusal here comes before)."""
    cfg = _config("trainer.epochs=1").copy()
    cfg.out_dir = str(tmp_path / "runs")
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    (run_dir / "results.json").write_text(json.dumps({"status": "finished", "knn_top1": 90.0, "linear_top1": 95.0}))
    save_checkpoint(run_dir, {"method": {}, "optimizer": {}, "step": 1, "rows": []})
    return run_dir


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _eval_refused(capsys, run_dir: Path, *overrides: str) -> str:
    before = _files(run_dir)
    capsys.readouterr()
    assert main(["eval", str(run_dir), *overrides]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("ssl-zoo: error: "), err
    assert _files(run_dir) == before  # results.json and everything else untouched
    return err


@pytest.mark.parametrize("override, message", [
    ("eval.knn_t=0", "eval.knn_t=0 is out of range; set eval.knn_t to a float > 0"),
    ("eval.knn_t=-0.5", "eval.knn_t=-0.5 is out of range"),
    ("eval.knn_k=0", "eval.knn_k=0 is out of range"),
    ("eval.batch_size=0", "eval.batch_size=0 is out of range"),
    ("eval.max_train=-3", "eval.max_train=-3 is out of range"),
    ("eval.finetune.lr=0", "eval.finetune.lr=0 is out of range"),
    ("eval.finetune.label_fractions=[0.1,2]", "eval.finetune.label_fractions=[0.1, 2] is out of range"),
    ("eval.protocol=knn", "eval.protocol='knn' is not a valid choice"),
    ("eval.knn_k=true", "eval.knn_k=true has the wrong type"),
    ("eval.knn_k=[", "the value is not readable"),
    ("eval.finetune=3", "eval.finetune is a group of keys"),
    ("device=tpu", "device='tpu' is not a valid choice"),
    ("eval.knn_k=5000", "eval.knn_k=5000 is more than the 1347 train images the probes use"),
])
def test_eval_overrides_are_range_checked_like_train(saved_run, capsys, override, message):
    assert message in _eval_refused(capsys, saved_run, override)


def test_train_refuses_a_knn_k_above_the_train_images_before_training(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", *tiny_overrides(out, "eval.knn_k=2000")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ssl-zoo: error: eval.knn_k=2000 is more than the 1347 train images the probes use; set "
                   "eval.knn_k <= 1347 (or null: chosen from the data)"]
    assert not out.exists()


@pytest.mark.parametrize("edit, message", [
    ({"eval": {"knn_t": 0}}, "eval.knn_t=0 is out of range"),
    ({"trainer": {"batch_size": "big"}}, "trainer.batch_size='big' has the wrong type"),
    ({"data": {"image_size": -4}}, "data.image_size=-4 is out of range"),
    ({"method": {"projector": {"out_dim": 0}}}, "method.projector.out_dim=0 is out of range"),
    ({"seed": "${nope}"}, "config.yaml"),
])
def test_a_hand_edited_run_config_is_refused_by_eval(saved_run, capsys, edit, message):
    path = saved_run / "config.yaml"
    OmegaConf.save(OmegaConf.merge(OmegaConf.load(path), edit), path)
    err = _eval_refused(capsys, saved_run)
    assert message in err and str(path) in err
