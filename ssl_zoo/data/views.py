"""Augmentation views as batched torch ops: the same code on CPU and CUDA.

Every op samples its per-sample parameters from the generator it is given (so a seeded generator per
step makes runs bit-reproducible and resumable), never loops over samples and never syncs with the
host, so a whole batch costs a handful of kernel launches and the ops are torch.compile-friendly.
Ops take float images in [0, 1] shaped [B, C, H, W] with C = 1 (grayscale) or 3 (RGB).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from ssl_zoo.common.errors import UserError

Params = dict[str, torch.Tensor]
Range = Sequence[float]  # (low, high)
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights, as torchvision


class ViewConfigError(UserError, ValueError):
    """A bad `views` config: a ValueError for callers, a one-line UserError for the CLI."""


@dataclass
class CropRecipe:
    n: int = 1  # how many crops with this recipe
    size: int = 32  # output side length
    size_frac: float | None = None  # if set, size = round(size_frac * base size) (multi-crop local views)
    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area fraction
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # in pixels of the crop, kernel ~10% of its side
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("scale", "ratio", "blur_sigma"):
            v = getattr(self, name)
            if len(v) != 2 or not 0 < v[0] <= v[1]:
                raise ViewConfigError(f"{name} must be [low, high] with 0 < low <= high, got {list(v)}")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ViewConfigError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.n < 1 or self.size < 1:
            raise ViewConfigError(f"n and size must be >= 1, got n={self.n}, size={self.size}")


def _draw(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """[B, k] uniforms: each op draws all its randomness in one call, the pure part follows."""
    return torch.rand(x.shape[0], k, generator=g, device=x.device)


def _lerp(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """[B,1,H,W] luma (the image itself for C == 1)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)  # scalar weights: no host-to-device copy of a constant tensor
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _out(res: tuple[torch.Tensor, Params], return_params: bool) -> torch.Tensor | tuple[torch.Tensor, Params]:
    return res if return_params else res[0]


def _crop_flip(x: torch.Tensor, u: torch.Tensor, size: int, scale: Range, ratio: Range, flip_p: float):
    area = _lerp(u[:, 0], scale[0], scale[1])
    r = _lerp(u[:, 1], math.log(ratio[0]), math.log(ratio[1])).exp()
    # Half-widths in normalised [-1, 1] coords equal width fractions; clamping keeps the crop inside
    # the image instead of torchvision's rejection loop (which would need host syncs).
    w = (area * r).sqrt().clamp(max=1.0)
    h = (area / r).sqrt().clamp(max=1.0)
    cx, cy = (1 - w) * (2 * u[:, 2] - 1), (1 - h) * (2 * u[:, 3] - 1)
    flip = u[:, 4] < flip_p
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([torch.where(flip, -w, w), zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out, {"area": w * h, "aspect": w / h, "flip": flip}


def _flip(x: torch.Tensor, u: torch.Tensor, flip_p: float):
    """The flip of _crop_flip alone (same uniform), for crops made before the batch (the streaming path)."""
    flip = u[:, 4] < flip_p
    return torch.where(_per_sample(flip), x.flip(-1), x), {"flip": flip}


def random_resized_crop_flip(x: torch.Tensor, size: int, scale: Range, ratio: Range, flip_p: float,
                             g: torch.Generator, return_params: bool = False):
    """RandomResizedCrop + horizontal flip as one affine grid_sample for the whole batch."""
    return _out(_crop_flip(x, _draw(x, 5, g), size, scale, ratio, flip_p), return_params)


def _rotate_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift the HSV hue of RGB images by per-sample `shift` (in turns), saturation and value kept.

    RGB -> HSV -> RGB fused: with v = max, v*s = max - min = delta, the closed-form HSV -> RGB
    is channel_n = v - delta * clamp(min(k, 4 - k), 0, 1), k = (n + 6 * hue) mod 6, n = 5, 3, 1.
    """
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    d = delta.clamp_min(1e-12)  # grey pixels: any hue works, delta = 0 cancels it below
    hue6 = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2 + (b - r) / d, 4 + (r - g) / d))
    n = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # made on device
    k = (n + hue6.unsqueeze(1) + 6 * _per_sample(shift)) % 6
    return maxc.unsqueeze(1) - delta.unsqueeze(1) * torch.minimum(k, 4 - k).clamp(0, 1)


def _jitter(x: torch.Tensor, b: torch.Tensor, c: torch.Tensor, s: torch.Tensor, h: torch.Tensor | None):
    """Apply per-sample jitter factors in the fixed order brightness, contrast, saturation, hue."""
    x = (x * _per_sample(b)).clamp(0, 1)
    mean = _gray(x).mean((1, 2, 3), keepdim=True)
    x = (_per_sample(c) * x + (1 - _per_sample(c)) * mean).clamp(0, 1)
    if x.shape[1] == 3:
        x = (_per_sample(s) * x + (1 - _per_sample(s)) * _gray(x)).clamp(0, 1)
        if h is not None:
            x = _rotate_hue(x, h)
    return x


def _color_jitter(x: torch.Tensor, u: torch.Tensor, p: float, brightness: float, contrast: float,
                  saturation: float, hue: float):
    applied = u[:, 0] < p
    b, c = _lerp(u[:, 1], 1 - brightness, 1 + brightness), _lerp(u[:, 2], 1 - contrast, 1 + contrast)
    s, h = _lerp(u[:, 3], 1 - saturation, 1 + saturation), _lerp(u[:, 4], -hue, hue)
    out = torch.where(_per_sample(applied), _jitter(x, b, c, s, h if hue > 0 else None), x)
    return out, {"applied": applied, "brightness": b, "contrast": c, "saturation": s, "hue": h}


def color_jitter(x: torch.Tensor, p: float, brightness: float, contrast: float, saturation: float, hue: float,
                 g: torch.Generator, return_params: bool = False):
    """ColorJitter applied to each sample with probability p (C == 1: brightness and contrast only)."""
    return _out(_color_jitter(x, _draw(x, 5, g), p, brightness, contrast, saturation, hue), return_params)


def _grayscale(x: torch.Tensor, u: torch.Tensor, p: float):
    applied = u[:, 0] < p
    out = x if x.shape[1] == 1 else torch.where(_per_sample(applied), _gray(x).expand_as(x), x)
    return out, {"applied": applied}


def random_grayscale(x: torch.Tensor, p: float, g: torch.Generator, return_params: bool = False):
    """Luma replicated to all 3 channels with probability p; no-op for C == 1."""
    return _out(_grayscale(x, _draw(x, 1, g), p), return_params)


def _blur(x: torch.Tensor, u: torch.Tensor, p: float, sigma_range: Range):
    bsz, ch, H, W = x.shape
    applied, sigma = u[:, 0] < p, _lerp(u[:, 1], sigma_range[0], sigma_range[1])
    radius = max(1, int(0.1 * min(H, W)) // 2)  # kernel side 2r+1: 3 px at 32, 7 at 64, 23 at 224
    off = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(off**2) / (2 * sigma[:, None] ** 2))
    k = torch.where(applied[:, None], k / k.sum(1, keepdim=True), (off == 0).to(x.dtype).expand_as(k))
    k = k.repeat_interleave(ch, 0)  # [B*C, 2r+1]
    y = x.reshape(1, bsz * ch, H, W)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=bsz * ch)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=bsz * ch)
    return y.view_as(x), {"applied": applied, "sigma": sigma}


def random_gaussian_blur(x: torch.Tensor, p: float, sigma_range: Range, g: torch.Generator,
                         return_params: bool = False):
    """Gaussian blur with probability p; sigma ~ U(sigma_range) in pixels of the current image.

    Kernel side ~10% of the image side (odd, >= 3), as BYOL/SimCLR use 23 px at 224. Separable, and one
    grouped conv over the batch with a per-sample kernel; unselected samples get a delta kernel.
    """
    return _out(_blur(x, _draw(x, 2, g), p, sigma_range), return_params)


def _solarize(x: torch.Tensor, u: torch.Tensor, p: float, threshold: float):
    applied = u[:, 0] < p
    return torch.where(_per_sample(applied) & (x >= threshold), 1 - x, x), {"applied": applied}


def random_solarize(x: torch.Tensor, p: float, threshold: float, g: torch.Generator, return_params: bool = False):
    """Invert pixels >= threshold with probability p."""
    return _out(_solarize(x, _draw(x, 1, g), p, threshold), return_params)


def _normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def plain_view(x: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Evaluation transform: uint8 -> float, bilinear antialiased resize if needed, normalise."""
    y = x.float() / 255
    if y.shape[-2:] != (size, size):
        y = F.interpolate(y, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return _normalize(y, mean, std)


NUM_UNIFORMS = 14  # per sample and recipe: crop 5, jitter 5, grayscale 1, blur 2, solarize 1


def apply_recipe(x: torch.Tensor, r: CropRecipe, u: torch.Tensor,
                 cropped: bool = False) -> tuple[torch.Tensor, dict[str, Params]]:
    """All ops of one recipe on float [0, 1] images, in the BYOL/SimCLR order, given u [B, NUM_UNIFORMS].
    `cropped`: x already holds this recipe's resized crops (made per sample by ssl_zoo.data.streaming): the crop is
    skipped, its flip kept; the uniforms are drawn alike either way.

    Pure (no generator), so torch.compile traces it as one graph: dynamo breaks on torch.rand(generator=).
    """
    uc, uj, ug, ub, us = u.split([5, 5, 1, 2, 1], 1)
    params: dict[str, Params] = {}
    if cropped:
        x, params["crop"] = _flip(x, uc, r.flip_p)
    else:
        x, params["crop"] = _crop_flip(x, uc, r.size, r.scale, r.ratio, r.flip_p)
    x, params["jitter"] = _color_jitter(x, uj, r.jitter_p, r.brightness, r.contrast, r.saturation, r.hue)
    x, params["gray"] = _grayscale(x, ug, r.gray_p)
    x, params["blur"] = _blur(x, ub, r.blur_p, r.blur_sigma)
    x, params["solarize"] = _solarize(x, us, r.solarize_p, r.solarize_threshold)
    return x, params


class ViewMaker:
    """Turns a uint8 batch into the list of normalised views its recipes describe."""

    def __init__(self, recipes: list[CropRecipe], mean: Sequence[float], std: Sequence[float]):
        self.recipes = list(recipes)
        self.mean, self.std = tuple(mean), tuple(std)
        self.num_views = sum(r.n for r in self.recipes)
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Copied to the device once: a host-to-device copy per call would sync the host on CUDA.
        if device not in self._stats:
            self._stats[device] = (torch.tensor(self.mean, device=device), torch.tensor(self.std, device=device))
        return self._stats[device]

    def recipe_input(self, xf: torch.Tensor | Sequence[torch.Tensor], k: int) -> torch.Tensor:
        """Float [0, 1] input of recipe k as one batch of n*B: the float images xf repeated n times, or the
        recipe's own crops when xf is a list of per-recipe uint8 crops [n*B, C, size, size] (streaming)."""
        if not isinstance(xf, torch.Tensor):
            return xf[k].float() / 255
        n = self.recipes[k].n
        return xf.repeat(n, 1, 1, 1) if n > 1 else xf

    def __call__(self, x: torch.Tensor | Sequence[torch.Tensor], generator: torch.Generator,
                 return_params: bool = False):
        """x uint8 [B,C,H,W] -> float32 views [B,C,size,size], recipes in order, each expanded n times.
        x may instead be the list of each recipe's crops, already resized (see recipe_input).

        With return_params, also returns one {op: params} dict per view (for tests and debugging).
        """
        cropped = not isinstance(x, torch.Tensor)
        xf = x if cropped else x.float() / 255
        mean, std = self._mean_std(x[0].device if cropped else x.device)
        views: list[torch.Tensor] = []
        params: list[dict[str, Params]] = []
        for k, r in enumerate(self.recipes):
            # The n crops of a recipe run as one batch of n*B: fewer, larger kernel launches.
            xr = self.recipe_input(xf, k)
            out, p = apply_recipe(xr, r, _draw(xr, NUM_UNIFORMS, generator), cropped)
            views += _normalize(out, mean, std).chunk(r.n)
            params += [{op: {k: v.chunk(r.n)[i] for k, v in d.items()} for op, d in p.items()} for i in range(r.n)]
        return (views, params) if return_params else views

    def draw(self, batch_size: int, generator: torch.Generator, device: torch.device,
             num_views: int) -> list[torch.Tensor]:
        """The uniforms __call__ draws for a batch of batch_size, as one [batch_size, NUM_UNIFORMS] per view (the
        first num_views): drawn once, they let view_chunk make a large batch's views a chunk at a time, alike."""
        per_view: list[torch.Tensor] = []
        for r in self.recipes:
            if len(per_view) >= num_views:
                break  # later recipes draw after the earlier ones: skipping them changes nothing before
            per_view += torch.rand(r.n * batch_size, NUM_UNIFORMS, generator=generator, device=device).chunk(r.n)
        return per_view[:num_views]

    def view_chunk(self, x: torch.Tensor, view: int, u: torch.Tensor) -> torch.Tensor:
        """View number `view` of uint8 images x [B,C,H,W], given their rows u [B, NUM_UNIFORMS] of draw()."""
        recipe = [r for r in self.recipes for _ in range(r.n)][view]  # the views: recipes in order, each n times
        mean, std = self._mean_std(x.device)
        return _normalize(apply_recipe(x.float() / 255, recipe, u)[0], mean, std)


_FIELDS = [f.name for f in dataclasses.fields(CropRecipe)]


def _check_keys(node: Mapping, valid: Sequence[str], where: str) -> None:
    for key in node:
        if key not in valid:
            raise ViewConfigError(f"unknown key {key!r} in {where}; valid keys: {', '.join(valid)}")


def _recipe(fields: Mapping[str, Any], base_size: int) -> CropRecipe:
    kw = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in fields.items()}
    if kw.get("size_frac") is not None:
        kw["size"] = max(1, round(kw["size_frac"] * base_size))
    return CropRecipe(**kw)


def build_view_maker(views_cfg: Any, mean: Sequence[float], std: Sequence[float]) -> ViewMaker:
    """Recipes from a `views` config: `base` holds CropRecipe fields, `crops` maps name -> overrides."""
    if isinstance(views_cfg, DictConfig):
        views_cfg = OmegaConf.to_container(views_cfg, resolve=True)
    _check_keys(views_cfg, ["name", "base", "crops"], "views")
    base = dict(views_cfg.get("base") or {})
    _check_keys(base, _FIELDS, "views.base")
    crops = views_cfg.get("crops") or {}
    if not crops:
        raise ViewConfigError("views.crops is empty: name at least one crop, e.g. crops: {view: {}}")
    recipes = []
    for name, over in crops.items():
        _check_keys(over or {}, _FIELDS, f"views.crops.{name}")
        recipes.append(_recipe({**base, **(over or {})}, base.get("size", CropRecipe.size)))
    return ViewMaker(recipes, mean, std)
