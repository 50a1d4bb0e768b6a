"""data.decode=gpu on a CUDA device: nvjpeg-decoded crops match the CPU (PIL) path within a tolerance, are the same
every time for a (seed, epoch, index, view), and fall back to the CPU path for the files nvjpeg cannot decode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ssl_zoo.data.streaming import synthetic
from ssl_zoo.data.streaming.gpu_decode import DeviceDecoder, EncodedTrainBatches
from ssl_zoo.data.streaming.loader import CropSpec, TrainBatches, load_streamed

from tiny import tiny_overrides

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SPECS = [CropSpec(2, 64, (0.08, 1.0), (3 / 4, 4 / 3)), CropSpec(2, 32, (0.05, 0.4), (3 / 4, 4 / 3))]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_decode") / "folder"
    return synthetic.write_folder(root, ["a", "b", "c"], 12, 2, odd=True, sizes=(200, 500), grain=12)


def _data(folder, tmp_path, decode, workers=0):
    node = {"root": str(folder), "image_size": 64, "workers": workers, "train_subset": None,
            "max_bad_fraction": 0.5, "index_dir": str(tmp_path / "index"), "decode": decode}
    return load_streamed(OmegaConf.create(node))


def _close(got: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        diff = (g.cpu().int() - r.int()).abs().float()
        # nvjpeg's IDCT and chroma upsampling vs libjpeg-turbo, torch's antialiased bilinear vs PIL's
        assert diff.mean() < 2.5 and diff.quantile(0.99) <= 16, (diff.mean(), diff.quantile(0.99))


def test_nvjpeg_crops_match_the_cpu_path_and_repeat_exactly(folder, tmp_path):
    data = _data(folder, tmp_path, "cpu")
    rows = np.arange(len(data.train))
    cpu = TrainBatches(data.train, SPECS, 0)
    decoder = DeviceDecoder(cpu, "cuda")
    encoded = EncodedTrainBatches(data.train, SPECS, 0)[(2, rows)]
    assert len(encoded.spans) >= 3 * 12  # the ordinary JPEGs went to nvjpeg
    got, labels, bad = decoder(encoded)
    again, _, _ = decoder(EncodedTrainBatches(data.train, SPECS, 0)[(2, rows)])
    assert all(g.is_cuda and torch.equal(g, a) for g, a in zip(got, again))  # deterministic per (seed, epoch, index)
    ref, ref_labels, ref_bad = cpu[(2, rows)]
    assert torch.equal(labels, ref_labels) and [e[0] for e in bad] == [e[0] for e in ref_bad]
    _close(got, ref)


def test_streamed_loader_with_gpu_decode_gives_the_cpu_loaders_batches(folder, tmp_path):
    order = np.random.default_rng(0).permutation(len(_data(folder, tmp_path, "cpu").pretrain_rows))
    batches = {d: list(_data(folder, tmp_path, d, workers=2).train_loader(SPECS, 0, 1, order, range(3), 8, 0, 1,
                                                                           d == "cpu"))
               for d in ("cpu", "gpu")}
    for (g, gy, _), (c, cy, _) in zip(batches["gpu"], batches["cpu"]):
        assert torch.equal(gy, cy)
        _close(g, c)


def test_training_with_gpu_decode(folder, tmp_path):
    from ssl_zoo.cli import main
    from ssl_zoo.config.load import load_config
    from ssl_zoo.runs.identity import run_dir_for

    base = [a for a in tiny_overrides(tmp_path) if a not in ("data=digits", "trainer.batch_size=64")]
    args = [*base, "data=imagefolder", f"data.root={folder}", f"data.index_dir={tmp_path / 'index'}",
            "data.image_size=32", "data.workers=2", "data.max_bad_fraction=0.2", "data.decode=gpu", "device=cuda",
            "trainer.batch_size=8", "trainer.steps=6", "monitor.num_images=8"]
    assert main(["train", *args]) == 0
    r = json.loads((run_dir_for(load_config(args)) / "results.json").read_text())
    assert r["status"] == "finished" and 0 <= r["knn_top1"] <= 100
