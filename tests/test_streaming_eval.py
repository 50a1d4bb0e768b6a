"""Evaluation at scale on streamed data: features memory-mapped on disk, probes read in chunks, the SGD
linear protocol, unreadable eval images listed, data.decode=gpu's worker side and its CPU fallback."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ssl_zoo.cli import main
from ssl_zoo.config.load import load_config
from ssl_zoo.data.streaming import synthetic
from ssl_zoo.data.streaming.gpu_decode import DeviceDecoder, EncodedTrainBatches, crop_resize
from ssl_zoo.data.streaming.loader import CropSpec, TrainBatches, load_streamed
from ssl_zoo.evaluation.feature_store import MappedRows
from ssl_zoo.evaluation.probes import knn_sweep, linear_probe
from ssl_zoo.runs.identity import run_dir_for

from tiny import tiny_overrides

CLASSES = ["c000", "c001", "c002"]


def _features(n: int, d: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy linear-teacher features: probes land well below 100%, so a changed prediction would show."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, classes, generator=torch.Generator().manual_seed(7))
    x = torch.randn(n, d, generator=g) * 2 + 0.5
    y = (x @ w + 4 * torch.randn(n, classes, generator=g)).argmax(1)
    return x, y


def _npy(tmp_path, name: str, x: torch.Tensor, dtype) -> np.ndarray:
    np.save(tmp_path / name, x.numpy().astype(dtype))
    return np.load(tmp_path / name, mmap_mode="r")


def test_chunked_memory_mapped_probes_match_the_in_memory_ones(tmp_path):
    x, y = _features(1500, 24, 6, seed=0)
    train, test = _npy(tmp_path, "tr.npy", x[:1200], np.float32), _npy(tmp_path, "te.npy", x[1200:], np.float32)
    chunked = {"resident_bytes": 0, "chunk_bytes": 4 * 24 * 100}  # 12 chunks of 100 rows
    ks, ts = (10, 20, 100, 200), (0.07, 0.1)
    whole = knn_sweep(x[:1200], y[:1200], x[1200:], y[1200:], 6, ks, ts, chunk=64)
    assert knn_sweep(train, y[:1200], test, y[1200:], 6, ks, ts, chunk=64, **chunked) == whole
    ref = linear_probe(x[:1200], y[:1200], x[1200:], y[1200:], 6)
    got = linear_probe(train, y[:1200], test, y[1200:], 6, **chunked)
    assert 40 < ref["top1"] < 95  # not a trivial problem
    assert got["top1"] == pytest.approx(ref["top1"], abs=0.34) and got["wd"] == ref["wd"]  # one test image at most


def test_mapped_rows_write_float32_in_place_of_a_partial_file(tmp_path):
    rows = MappedRows(5, tmp_path / "a.npy")
    rows.write(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert not (tmp_path / "a.npy").exists()  # only the partial file until every row is there
    rows.write(torch.tensor([[1e6, 0.5], [5.0, 6.0], [7.0, 8.0]]))
    out = rows.finish()
    assert isinstance(out, np.memmap) and out.dtype == np.float32 and out[2, 0] == 1e6
    assert np.array_equal(out[:2], [[1, 2], [3, 4]]) and sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]
    short = MappedRows(3, tmp_path / "b.npy")
    short.write(torch.ones(2, 2))
    with pytest.raises(RuntimeError, match="2 of 3"):
        short.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]
    scratch = MappedRows(2)
    scratch.write(torch.ones(2, 3))
    private = scratch.finish()
    folder = Path(private.filename).parent
    assert private.shape == (2, 3) and folder.is_dir()
    del private
    gc.collect()
    assert not folder.exists()  # a private file goes with its array


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream_eval") / "folder"
    synthetic.write_folder(root, CLASSES, 10, 4, odd=True, sizes=(48, 120))
    good = (root / "val" / "c001" / "c001_0.JPEG").read_bytes()
    (root / "val" / "c001" / "broken.JPEG").write_bytes(good[:150] + b"\0" * 40)  # an unreadable eval image
    return root


def _args(tmp_path, folder, *extra):
    base = [a for a in tiny_overrides(tmp_path) if a not in ("data=digits", "trainer.batch_size=64")]
    return [*base, "data=imagefolder", f"data.root={folder}", f"data.index_dir={tmp_path / 'index'}",
            "data.image_size=32", "data.workers=0", "data.max_bad_fraction=0.2", "trainer.batch_size=8",
            "trainer.steps=4", "monitor.num_images=8", *extra]


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory, folder):
    """One streamed run evaluated with the SGD linear protocol (1 epoch) at the end of training."""
    out = tmp_path_factory.mktemp("runs")
    args = _args(out, folder, "eval.protocol=sgd", "eval.epochs=1", "eval.sgd.batch_size=16")
    return run_dir_for(load_config(args)), main(["train", *args])


def test_streamed_eval_caches_memory_mapped_features_and_names_the_protocol(sgd_run, capsys):
    run_dir, code = sgd_run
    assert code == 0
    [cache] = (run_dir / "features").glob("backbone-*")
    train = np.load(cache / "train.npy", mmap_mode="r")
    assert isinstance(train, np.memmap) and train.dtype == np.float32 and train.shape[0] == 35  # 3 x 10 + 5 odd
    r = json.loads((run_dir / "results.json").read_text())
    assert r["linear_protocol"] == "lbfgs" and r["linear_sgd"]["epochs"] == 1 and r["linear_sgd"]["n_train"] == 35
    assert r["linear_sgd_top1"] == r["linear_sgd"]["top1"] and "linear_lbfgs" not in r  # linear_top1: L-BFGS
    assert r["projector"]["linear_protocol"] == "lbfgs"
    assert main(["eval", str(run_dir)]) == 0  # the cached features are read back
    printed = capsys.readouterr().out
    assert "4 steps, seed 0" in printed and "eval.protocol=sgd" in printed
    assert json.loads((run_dir / "results.json").read_text())["time"]["features_cached"]


def test_unreadable_eval_images_are_listed_once_marked_eval(sgd_run):
    run_dir, _ = sgd_run
    lines = (run_dir / "bad_samples.txt").read_text().splitlines()
    evals = sorted(line.split("\t")[1].rsplit("/", 2)[-2:] for line in lines if line.startswith("eval\t"))
    assert evals == [["c000", "odd_corrupt.JPEG"], ["c001", "broken.JPEG"]]  # read by the probes: train and val
    assert all(line.startswith("eval\t") or line.split("\t")[0].isdigit() for line in lines)


def test_a_later_probes_evaluation_keeps_the_sgd_numbers_beside_its_own(sgd_run, capsys):
    run_dir, _ = sgd_run
    sgd = json.loads((run_dir / "results.json").read_text())["linear_sgd_top1"]
    assert main(["eval", str(run_dir), "eval.protocol=probes"]) == 0
    r = json.loads((run_dir / "results.json").read_text())
    assert r["linear_protocol"] == "lbfgs" and r["linear_sgd_top1"] == sgd  # the same checkpoint and images
    assert "projector" in r  # recomputed (same checkpoint)
    assert "linear (SGD, 1 ep) top-1" in capsys.readouterr().out


def test_projector_numbers_are_kept_for_their_checkpoint_and_probes_only(sgd_run):
    run_dir, _ = sgd_run
    results = run_dir / "results.json"
    assert main(["eval", str(run_dir), "eval.projector=false"]) == 0
    assert "projector" in json.loads(results.read_text())  # not recomputed, but of the same checkpoint
    assert main(["eval", str(run_dir), "eval.projector=false", "eval.knn_k=5"]) == 0
    assert "projector" not in json.loads(results.read_text())  # its kNN used another k
    assert main(["eval", str(run_dir)]) == 0
    r = json.loads(results.read_text())
    assert "projector" in r
    results.write_text(json.dumps({**r, "evaluated_step": 2}))  # as if measured at an earlier checkpoint
    assert main(["eval", str(run_dir), "eval.projector=false"]) == 0
    assert "projector" not in json.loads(results.read_text())


def test_sgd_linear_protocol_on_in_memory_digits_learns_and_is_deterministic():
    from ssl_zoo.data.datasets import load_data
    from ssl_zoo.data.views import plain_view
    from ssl_zoo.evaluation.linear_sgd import linear_sgd
    from ssl_zoo.train.build import build_method

    cfg = load_config(["data=digits", "encoder=small_cnn", "encoder.width=8", "eval.epochs=8", "eval.sgd.lr=3.0",
                       "eval.sgd.batch_size=128", "eval.sgd.nesterov=true"])
    data = load_data(cfg.data)
    method = build_method(cfg)
    backbone = method.backbone
    # BN running statistics of the train images (at init they are 0/1 and the features ~1e-3: no feature
    # standardisation in this protocol, as in the papers, so SGD would barely move in two epochs)
    for m in backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        backbone.train()(plain_view(data.train_x, 16, list(cfg.data.mean), list(cfg.data.std)))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    a, b = (linear_sgd(backbone, method.feat_dim, data, data.train_x, data.train_y, cfg, "cpu") for _ in range(2))
    assert a["top1"] == b["top1"] and a["top1"] > 30  # random-init features: well above 10% chance
    assert a["steps"] == 8 * 11 and a["nesterov"] and a["lr"] == pytest.approx(3.0 * 128 / 256)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # frozen, BN stats too


def _streamed(folder, tmp_path):
    node = {"root": str(folder), "image_size": 32, "workers": 0, "train_subset": None, "max_bad_fraction": 0.5,
            "index_dir": str(tmp_path / "index")}
    return load_streamed(OmegaConf.create(node))


SPECS = [CropSpec(2, 32, (0.08, 1.0), (3 / 4, 4 / 3)), CropSpec(1, 16, (0.05, 0.4), (3 / 4, 4 / 3))]


def test_gpu_decode_workers_send_jpeg_bytes_and_the_cpu_path_boxes(folder, tmp_path):
    data = _streamed(folder, tmp_path)
    rows = np.arange(len(data.train))
    cpu, encoded = TrainBatches(data.train, SPECS, 0), EncodedTrainBatches(data.train, SPECS, 0)[(3, rows)]
    names = [data.train.file_path(i).name for i in rows]
    fallback = {names[k] for k, _ in encoded.cpu}  # grayscale baseline JPEGs go to nvjpeg (decoded to RGB there)
    assert fallback == {"odd_cmyk.JPEG", "odd_progressive.JPEG", "odd_png.JPEG", "odd_corrupt.JPEG"}
    assert len(encoded.at) + len(encoded.cpu) == len(rows) and [e[1] for e in encoded.bad] == [
        str(data.train.file_path(names.index("odd_corrupt.JPEG")))]
    from PIL import Image

    for k, boxes in zip(encoded.at, encoded.boxes):
        with Image.open(data.train.file_path(k)) as img:
            assert boxes == cpu.boxes(k, 3, *img.size)  # (seed, epoch, index, view) draws, as on the CPU path
        assert bytes(EncodedTrainBatches.files(encoded)[encoded.at.index(k)].numpy()) == \
            data.train.file_path(k).read_bytes()
    ref_crops, ref_labels, ref_bad = cpu[(3, rows)]
    assert torch.equal(encoded.labels, ref_labels)
    for k, crops in encoded.cpu:  # the fallback made exactly the CPU path's crops
        assert torch.equal(crops[0], ref_crops[0][k]) and torch.equal(crops[2], ref_crops[1][k])


def test_device_decoding_on_the_cpu_matches_the_pil_path(folder, tmp_path):
    pytest.importorskip("torchvision.io")
    data = _streamed(folder, tmp_path)
    rows = np.arange(len(data.train))
    cpu = TrainBatches(data.train, SPECS, 0)
    got, labels, bad = DeviceDecoder(cpu, "cpu")(EncodedTrainBatches(data.train, SPECS, 0)[(1, rows)])
    ref, ref_labels, ref_bad = cpu[(1, rows)]
    assert torch.equal(labels, ref_labels) and [e[0] for e in bad] == [e[0] for e in ref_bad]
    for g, r in zip(got, ref):
        diff = (g.int() - r.int()).abs().float()
        assert g.shape == r.shape and diff.mean() < 2.0, diff.mean()  # libjpeg vs PIL, torch vs PIL antialias


def test_crop_resize_is_antialiased_like_pil():
    from ssl_zoo.data.streaming.decode import resized_crop

    img = synthetic.make_image(np.random.default_rng(0), 2, 5, 300, 200, grain=20)
    box = (30, 20, 270, 180)
    ours = crop_resize(torch.from_numpy(np.asarray(img)).permute(2, 0, 1), box, 24).permute(1, 2, 0).int()
    pil = torch.from_numpy(resized_crop(img, box, 24)).int()
    inner = (ours - pil)[1:-1, 1:-1].abs()  # the border differs: PIL's box resize reads the box's neighbours
    assert inner.float().mean() < 1.0 and inner.max() <= 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_gpu_decode_without_cuda_is_one_line_and_writes_nothing(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", *_args(out, folder, "data.decode=gpu")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.decode=gpu" in err and "data.decode=cpu" in err
    assert not out.exists()
