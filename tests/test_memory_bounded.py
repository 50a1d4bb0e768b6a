"""Running a model over a fixed set of images (collapse monitors, spectra, feature extraction) sees at most one
batch per forward pass, and gives the numbers of a single pass over all of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_zoo import api
from ssl_zoo.data.views import CropRecipe, ViewMaker
from ssl_zoo.train.epoch_monitor import EpochMonitor

from tiny import tiny_overrides

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _images(n: int, channels: int = 3, side: int = 32, seed: int = 0) -> torch.Tensor:
    shape = (n, channels, side, side)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


class _LargestBatch:
    """The largest batch a module (and any copy of it, target networks included) has seen in a forward pass."""

    def __init__(self, module: torch.nn.Module):
        sizes = self.sizes = [0]
        # A plain closure, not a bound method: a deep copy of the module shares it, and so reports here too.
        module.register_forward_hook(lambda _module, inputs, _output: sizes.append(inputs[0].shape[0]))

    @property
    def largest(self) -> int:
        return max(self.sizes)


@pytest.mark.parametrize("recipes", [
    [CropRecipe(n=2, size=24, blur_p=0.5, solarize_p=0.2)],  # SimSiam-like: one recipe, two crops
    [CropRecipe(size=24, blur_p=1.0), CropRecipe(size=24, blur_p=0.1, solarize_p=0.2)],  # BYOL-like
    [CropRecipe(n=1, size=24), CropRecipe(n=3, size=12, scale=(0.05, 0.4))],  # multi-crop: one global view first
])
def test_views_made_a_chunk_at_a_time_equal_those_of_one_batch(recipes):
    maker, x = ViewMaker(recipes, MEAN, STD), _images(50)
    whole = maker(x, torch.Generator().manual_seed(3))
    uniforms = maker.draw(len(x), torch.Generator().manual_seed(3), x.device, 2)
    for view, u in enumerate(uniforms):
        chunked = torch.cat([maker.view_chunk(x[i:i + 16], view, u[i:i + 16]) for i in range(0, len(x), 16)])
        assert torch.equal(chunked, whole[view])


def test_epoch_monitor_forwards_at_most_a_training_batch_with_the_numbers_of_one_pass(tmp_path):
    cfg = api.config("byol", *tiny_overrides(tmp_path)[1:])
    method, views, images = api.build(cfg), api.view_maker(cfg), _images(300, int(cfg.data.channels))
    seen = _LargestBatch(method.backbone)

    def monitor(batch_size: int) -> EpochMonitor:
        return EpochMonitor(images, views, int(cfg.data.image_size), cfg.data.mean, cfg.data.std, 0, torch.device("cpu"), batch_size)

    chunked = monitor(64).metrics(method)
    monitor(64).save_spectra(tmp_path / "chunked", method)
    assert seen.largest == 64
    whole = monitor(len(images)).metrics(method)
    monitor(len(images)).save_spectra(tmp_path / "whole", method)
    assert seen.largest == len(images)
    assert chunked.keys() == whole.keys() and "alignment" in chunked and "backbone_uniformity" in chunked
    for key in whole:
        assert chunked[key] == pytest.approx(whole[key], rel=1e-5, abs=1e-6), key
    for name in ("spectrum.npy", "spectrum_backbone.npy"):
        assert np.allclose(np.load(tmp_path / "chunked" / name), np.load(tmp_path / "whole" / name), rtol=1e-5)


def test_a_training_run_with_many_monitored_images_never_forwards_more_than_its_batch(tmp_path, monkeypatch):
    import ssl_zoo.train.build as build

    largest: list[_LargestBatch] = []
    real_build_method = build.build_method

    def build_and_watch(*args, **kwargs):
        method = real_build_method(*args, **kwargs)
        largest.append(_LargestBatch(method.backbone))
        return method

    monkeypatch.setattr(build, "build_method", build_and_watch)
    run = api.train(api.config("byol", *tiny_overrides(tmp_path, "monitor.num_images=360", "trainer.epochs=1",
                                                      "eval.enabled=false")[1:]))
    assert (run / "spectrum.npy").is_file()
    assert largest and max(w.largest for w in largest) == 64  # trainer.batch_size, not the 360 monitored images


def test_api_features_reads_the_eval_batch_size(tmp_path):
    cfg = api.config("byol", *tiny_overrides(tmp_path, "eval.batch_size=40")[1:])
    backbone = api.build(cfg).backbone
    seen = _LargestBatch(backbone)
    images = _images(100, int(cfg.data.channels))
    feats = api.features(backbone, images, cfg)
    assert seen.largest == 40 and feats.shape[0] == 100
    seen.sizes[:] = [0]
    api.features(backbone, images, cfg, batch_size=25)
    assert seen.largest == 25
