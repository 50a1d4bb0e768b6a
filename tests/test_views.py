"""Batched augmentation views: shapes, reproducibility, per-sample statistics and config loading."""

import math
from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF
from omegaconf import OmegaConf

from ssl_zoo.data.views import (
    NUM_UNIFORMS,
    CropRecipe,
    ViewMaker,
    _jitter,
    _rotate_hue,
    apply_recipe,
    build_view_maker,
    color_jitter,
    plain_view,
    random_gaussian_blur,
    random_grayscale,
    random_resized_crop_flip,
    random_solarize,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "views"
N = 4000  # samples for the rate checks: 4 standard errors of a rate is at most 0.032
MEAN3, STD3 = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def images(b: int, c: int = 3, side: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, side, side), dtype=torch.uint8, generator=gen(seed))


def floats(b: int, c: int = 3, side: int = 8, seed: int = 0) -> torch.Tensor:
    return images(b, c, side, seed).float() / 255


def assert_rate(mask: torch.Tensor, p: float) -> None:
    n = mask.numel()
    assert abs(mask.float().mean().item() - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (mask.float().mean(), p)


def load_views(name: str, image_size: int = 32, crop_scale_min: float = 0.08, flip_p: float = 0.5):
    data = {"image_size": image_size, "crop_scale_min": crop_scale_min, "flip_p": flip_p}
    root = OmegaConf.create({"data": data, "views": OmegaConf.load(CONF / f"{name}.yaml")})
    return root.views


def maker(name: str, channels: int = 3, **data) -> ViewMaker:
    mean, std = (MEAN3, STD3) if channels == 3 else ((0.3,), (0.3,))
    return build_view_maker(load_views(name, **data), mean, std)


# --- ViewMaker and plain_view -------------------------------------------------------------------------


@pytest.mark.parametrize("name,channels,side,image_size,expected", [
    ("byol", 3, 32, 32, [32, 32]),
    ("simsiam", 1, 28, 28, [28, 28]),
    ("multicrop", 3, 32, 32, [32, 32] + [16] * 6),
    ("multicrop", 1, 8, 16, [16, 16] + [8] * 6),  # digits: 8x8 upscaled to 16, locals 8
])
def test_maker_shapes(name, channels, side, image_size, expected):
    vm = maker(name, channels, image_size=image_size)
    views = vm(images(5, channels, side), gen())
    assert vm.num_views == len(views) == len(expected)
    for v, s in zip(views, expected, strict=True):
        assert v.shape == (5, channels, s, s) and v.dtype == torch.float32 and torch.isfinite(v).all()


def test_plain_view_normalises_and_resizes():
    x = torch.full((2, 3, 8, 8), 128, dtype=torch.uint8)
    out = plain_view(x, 16, MEAN3, STD3)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    want = (128 / 255 - torch.tensor(MEAN3)) / torch.tensor(STD3)
    torch.testing.assert_close(out, want.view(1, 3, 1, 1).expand_as(out))
    y = images(2, 1, 8)
    torch.testing.assert_close(plain_view(y, 8, (0.0,), (1.0,)), y.float() / 255)


def test_same_seed_same_views_and_views_differ():
    vm, x = maker("byol"), images(16, 3, 32)
    a, b = vm(x, gen(3)), vm(x, gen(3))
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a[0], a[1])  # two views of the same images
    assert not torch.equal(a[0], vm(x, gen(4))[0])
    local = maker("multicrop")(x, gen(0))[2:]
    assert all(not torch.equal(local[0], v) for v in local[1:])  # the n expanded crops differ


def test_apply_recipe_traces_as_one_graph():
    # The randomness is drawn outside, so torch.compile sees a single graph without breaks.
    explain = torch._dynamo.explain(apply_recipe)(floats(4, 3, 8), CropRecipe(size=8, blur_p=0.5), torch.rand(4, NUM_UNIFORMS))
    torch._dynamo.reset()
    assert (explain.graph_count, explain.graph_break_count) == (1, 0)


def test_byol_view_rates():
    views, params = maker("byol", image_size=8)(images(N, 3, 8), gen(), return_params=True)
    assert len(params) == 2
    for p in params:
        assert_rate(p["crop"]["flip"], 0.5)
        assert_rate(p["jitter"]["applied"], 0.8)
        assert_rate(p["gray"]["applied"], 0.2)
    assert params[0]["blur"]["applied"].all() and not params[0]["solarize"]["applied"].any()
    assert_rate(params[1]["blur"]["applied"], 0.1)
    assert_rate(params[1]["solarize"]["applied"], 0.2)


def test_multicrop_local_params():
    _, params = maker("multicrop", image_size=8)(images(N // 8, 3, 8), gen(), return_params=True)
    area = torch.cat([p["crop"]["area"] for p in params[2:]])
    assert area.min() >= 0.05 - 1e-6 and area.max() <= 0.4 + 1e-6
    assert_rate(torch.cat([p["blur"]["applied"] for p in params[2:]]), 0.5)
    assert params[0]["crop"]["area"].min() >= 0.4 - 1e-6


# --- individual ops ---------------------------------------------------------------------------------


def test_crop_statistics():
    # scale * ratio < 1 throughout, so no clamping: area ~ U(scale) and log-aspect ~ U(log ratio).
    x = floats(N, 1, 4)
    out, p = random_resized_crop_flip(x, 6, (0.1, 0.5), (3 / 4, 4 / 3), 0.3, gen(), return_params=True)
    assert out.shape == (N, 1, 6, 6)
    assert p["area"].min() >= 0.1 - 1e-6 and p["area"].max() <= 0.5 + 1e-6
    assert abs(p["area"].mean().item() - 0.3) < 0.01
    assert p["aspect"].min() >= 3 / 4 - 1e-5 and p["aspect"].max() <= 4 / 3 + 1e-5
    assert abs(p["aspect"].log().mean().item()) < 0.01
    assert_rate(p["flip"], 0.3)
    # Full scale: clamped to the image, the area stays within scale and the aspect within ratio.
    _, p = random_resized_crop_flip(x, 4, (0.08, 1.0), (3 / 4, 4 / 3), 0.5, gen(), return_params=True)
    assert p["area"].min() >= 0.08 - 1e-6 and p["area"].max() <= 1 + 1e-6
    assert p["aspect"].min() >= 3 / 4 - 1e-5 and p["aspect"].max() <= 4 / 3 + 1e-5


def test_crop_identity_flip_and_upscale():
    x = floats(4, 3, 8)
    same = random_resized_crop_flip(x, 8, (1.0, 1.0), (1.0, 1.0), 0.0, gen())
    torch.testing.assert_close(same, x)
    torch.testing.assert_close(random_resized_crop_flip(x, 8, (1.0, 1.0), (1.0, 1.0), 1.0, gen()), x.flip(-1))
    up = random_resized_crop_flip(x, 16, (1.0, 1.0), (1.0, 1.0), 0.0, gen())
    torch.testing.assert_close(up.mean((2, 3)), x.mean((2, 3)), atol=0.02, rtol=0)


def test_hue_rotation_wraps_and_keeps_grey():
    x = floats(8, 3, 8)
    for turns in (0.0, 1.0, -1.0):
        torch.testing.assert_close(_rotate_hue(x, torch.full((8,), turns)), x, atol=1e-5, rtol=0)
    grey = x[:, :1].expand_as(x)
    torch.testing.assert_close(_rotate_hue(grey, torch.full((8,), 0.3)), grey, atol=1e-6, rtol=0)


def test_jitter_matches_torchvision():
    x, ones = floats(6, 3, 8), torch.ones(6)
    b, c, s, h = 1.2, 0.7, 1.3, 0.08
    ours = _jitter(x, ones * b, ones * c, ones * s, ones * h)
    ref = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, b), c), s), h)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)
    gray = floats(6, 1, 8)
    ref1 = TF.adjust_contrast(TF.adjust_brightness(gray, b), c)
    torch.testing.assert_close(_jitter(gray, ones * b, ones * c, ones * s, ones * h), ref1, atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_jitter_rate_and_ranges(channels):
    x = floats(N, channels, 4)
    out, p = color_jitter(x, 0.8, 0.4, 0.4, 0.2, 0.1, gen(), return_params=True)
    assert_rate(p["applied"], 0.8)
    assert torch.equal(out[~p["applied"]], x[~p["applied"]])
    assert out.min() >= 0 and out.max() <= 1
    for key, lo, hi in [("brightness", 0.6, 1.4), ("contrast", 0.6, 1.4), ("saturation", 0.8, 1.2), ("hue", -0.1, 0.1)]:
        assert p[key].min() >= lo and p[key].max() <= hi and abs(p[key].mean().item() - (lo + hi) / 2) < 0.02


def test_grayscale():
    x = floats(N, 3, 4)
    out, p = random_grayscale(x, 0.2, gen(), return_params=True)
    assert_rate(p["applied"], 0.2)
    sel = out[p["applied"]]
    assert torch.equal(sel[:, 0], sel[:, 1]) and torch.equal(sel[:, 1], sel[:, 2])
    torch.testing.assert_close(sel[:, 0], (x[p["applied"]] * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1))
    assert torch.equal(out[~p["applied"]], x[~p["applied"]])
    g1 = floats(8, 1, 4)
    assert torch.equal(random_grayscale(g1, 1.0, gen()), g1)


@pytest.mark.parametrize("channels", [1, 3])
def test_blur_rate_and_kernel(channels):
    x = floats(N, channels, 8)
    out, p = random_gaussian_blur(x, 0.3, (0.1, 2.0), gen(), return_params=True)
    assert_rate(p["applied"], 0.3)
    assert torch.equal(out[~p["applied"]], x[~p["applied"]])
    visible = p["applied"] & (p["sigma"] > 0.5)  # sigma 0.1 is numerically a delta kernel
    assert (out[visible] - x[visible]).abs().amax((1, 2, 3)).min() > 0.01
    assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
    # Fixed sigma on 32 px: a 3-tap kernel, reflect padding, as torchvision's gaussian_blur.
    y = floats(4, channels, 32)
    ours = random_gaussian_blur(y, 1.0, (1.5, 1.5), gen())
    torch.testing.assert_close(ours, TF.gaussian_blur(y, [3, 3], [1.5, 1.5]), atol=1e-6, rtol=0)
    z = floats(2, channels, 64)  # 64 px: 6.4 -> a 7-tap kernel
    torch.testing.assert_close(random_gaussian_blur(z, 1.0, (1.0, 1.0), gen()), TF.gaussian_blur(z, [7, 7], [1.0, 1.0]))


@pytest.mark.parametrize("channels", [1, 3])
def test_solarize(channels):
    x = floats(N, channels, 4)
    out, p = random_solarize(x, 0.2, 0.5, gen(), return_params=True)
    assert_rate(p["applied"], 0.2)
    sel, xs = out[p["applied"]], x[p["applied"]]
    assert torch.equal(sel, torch.where(xs >= 0.5, 1 - xs, xs))
    assert torch.equal(out[~p["applied"]], x[~p["applied"]])


def test_digits_grayscale_upscale():
    vm = ViewMaker([CropRecipe(n=2, size=16, blur_p=0.5, solarize_p=0.5, gray_p=1.0)], (0.2,), (0.3,))
    views = vm(images(32, 1, 8), gen())
    assert [v.shape for v in views] == [(32, 1, 16, 16)] * 2


# --- config loading ---------------------------------------------------------------------------------


def test_yaml_recipes():
    byol = maker("byol").recipes
    assert [(r.n, r.size, r.blur_p, r.solarize_p) for r in byol] == [(1, 32, 1.0, 0.0), (1, 32, 0.1, 0.2)]
    assert byol[0].scale == (0.08, 1.0) and byol[0].flip_p == 0.5 and byol[0].saturation == 0.2
    (simsiam,) = maker("simsiam", crop_scale_min=0.2).recipes
    assert (simsiam.n, simsiam.scale, simsiam.saturation, simsiam.blur_p, simsiam.solarize_p) == (2, (0.2, 1.0), 0.4, 0.5, 0.0)
    mc = maker("multicrop", image_size=28, flip_p=0.0).recipes
    assert [(r.n, r.size) for r in mc] == [(1, 28), (1, 28), (6, 14)]
    assert mc[2].scale == (0.05, 0.4) and mc[1].solarize_p == 0.2 and all(r.flip_p == 0.0 for r in mc)
    plain = build_view_maker({"base": {"size": 8}, "crops": {"a": {}, "b": {"n": 3}}}, (0.5,), (0.5,))
    assert plain.num_views == 4 and plain.recipes[1].size == 8


@pytest.mark.parametrize("cfg,key", [
    ({"base": {"sise": 8}, "crops": {"a": {}}}, "sise"),
    ({"base": {}, "crops": {"a": {"blur": 1.0}}}, "blur"),
    ({"base": {}, "crops": {"a": {}}, "extra": 1}, "extra"),
])
def test_unknown_key_raises(cfg, key):
    with pytest.raises(ValueError, match=key) as err:
        build_view_maker(OmegaConf.create(cfg), (0.5,), (0.5,))
    assert "\n" not in str(err.value) and "valid keys:" in str(err.value)


@pytest.mark.parametrize("bad", [{"scale": [0.5, 0.1]}, {"blur_sigma": [0.0, 1.0]}, {"ratio": [1.0]},
                                 {"flip_p": 1.5}, {"n": 0}])
def test_bad_values_raise(bad):
    with pytest.raises(ValueError, match="n and size" if "n" in bad else next(iter(bad))):
        build_view_maker({"base": {}, "crops": {"a": bad}}, (0.5,), (0.5,))


def test_empty_crops_raise():
    with pytest.raises(ValueError, match="crops"):
        build_view_maker({"base": {}, "crops": {}}, (0.5,), (0.5,))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_views_on_cuda_without_host_syncs():
    vm, x = maker("multicrop"), images(64, 3, 32).cuda()
    g1, g2 = gen(1, "cuda"), gen(1, "cuda")
    vm(x, gen(0, "cuda"))  # first call copies mean/std to the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # from here any .item()/host sync inside the maker raises
    try:
        a, b = vm(x, g1), vm(x, g2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [v.shape[-1] for v in a] == [32, 32] + [16] * 6
    assert all(v.is_cuda and v.dtype == torch.float32 for v in a)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
