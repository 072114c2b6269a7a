"""The fast path: one policy applied to a whole ``[B, C, H, W]`` batch on its device, and multi-view wrappers.

Parameters are drawn per sample from a ``torch.Generator`` (so previews are reproducible and
can show what they drew); crop, flip and both rotations are one affine resample.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_viz.augment.geometry import affine_grid, affine_theta
from ssl_viz.augment.kernels import CUTOUT_RATIO, apply_jigsaw, blur_kernel_size, color_jitter, cutout, gaussian_blur, solarize, to_grayscale
from ssl_viz.augment.policy import describe_policy, geometric_enabled, validate_policy
from ssl_viz.augment.sampling import Sampler, sample_crop
from ssl_viz.config import AugmentConfig


def _as_float(x: Tensor) -> Tensor:
    """uint8 -> float in [0, 1]; floats pass through."""
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise TypeError(f"expected a float or uint8 image batch, got {x.dtype}")
    return x


class BatchAugment:
    """One augmentation policy applied to a whole batch at once (SimCLR recipe: Chen et al. 2020).

    ``BatchAugment(cfg)(x)`` with ``x [B, C, H, W]`` float in [0, 1] (uint8 is converted) returns
    ``[B, C, H', W']`` in [0, 1], ``H' = W' = cfg.out_size`` or the input size. Order: crop, flip,
    rotation, rot90 (one affine resample) -> colour jitter -> grayscale -> blur -> solarize ->
    jigsaw -> cutout. Parameters are drawn per sample from ``generator`` (on its own device, CPU
    or the batch's) and, with ``return_params=True``, returned as a dict of ``[B, ...]`` tensors:

    ``crop [B, 4]`` (x, y, w, h) fractions of the input; ``flip [B]``; ``angle [B]`` degrees;
    ``rot90_k [B]``; ``jitter [B]``, ``brightness``, ``contrast``, ``saturation``, ``hue [B]``,
    ``jitter_order [B, 4]`` (0 b, 1 c, 2 s, 3 h); ``grayscale [B]``; ``blur_sigma [B]`` (0 = none);
    ``solarize [B]``; ``jigsaw_perm [B, g*g]`` (g = 0: ``[B, 0]``); ``cutout [B, 4]`` int (x, y, w, h)
    pixels of the output (w = h = 0: none).

    ``padding_mode`` of the resample: None picks "zeros" when free rotation is on (as
    RandomRotation's fill 0) and "border" otherwise (crops stay inside the image).
    """

    def __init__(self, cfg: AugmentConfig, padding_mode: str | None = None) -> None:
        self.cfg = validate_policy(cfg)
        self.padding_mode = padding_mode or ("zeros" if cfg.rotation_degrees > 0 else "border")

    def __repr__(self) -> str:
        return f"BatchAugment({describe_policy(self.cfg)})"

    def __call__(self, x: Tensor, generator: torch.Generator | None = None, return_params: bool = False):
        x = _as_float(x)
        if x.ndim != 4:
            raise ValueError(f"expected a batch [B, C, H, W], got shape {tuple(x.shape)}")
        s = Sampler(generator, x.device)
        params: dict[str, Tensor] = {}
        x = self._geometry(x, s, params)
        x = self._color(x, s, params)
        x = self._blur(x, s, params)
        x = self._solarize(x, s, params)
        x = self._jigsaw(x, s, params)
        x = self._cutout(x, s, params)
        x = x.clamp(0.0, 1.0)
        return (x, params) if return_params else x

    def _out_hw(self, x: Tensor) -> tuple[int, int]:
        return (self.cfg.out_size, self.cfg.out_size) if self.cfg.out_size else tuple(x.shape[-2:])

    def _geometry(self, x: Tensor, s: Sampler, params: dict) -> Tensor:
        """Crop + flip + rotation + rot90 as one ``grid_sample`` per batch: ``[B, C, H, W] -> [B, C, H', W']``."""
        cfg, n, out_hw = self.cfg, x.shape[0], self._out_hw(x)
        crop = sample_crop(s, n, cfg, tuple(x.shape[-2:]))
        flip = s.bernoulli(n, cfg.flip_p) if cfg.flip_p > 0 else torch.zeros(n, dtype=torch.bool, device=x.device)
        angle = torch.zeros(n, device=x.device)
        if cfg.rotation_degrees > 0:
            angle = s.uniform((n,), -cfg.rotation_degrees, cfg.rotation_degrees)
        k = torch.zeros(n, dtype=torch.long, device=x.device)
        if cfg.rotate90_p > 0:
            k = torch.where(s.bernoulli(n, cfg.rotate90_p), s.randint(n, 1, 4), k)
        params.update(crop=crop, flip=flip, angle=angle, rot90_k=k)
        if not geometric_enabled(cfg):
            if out_hw == tuple(x.shape[-2:]):
                return x
            return F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=True)
        theta = affine_theta(crop, flip, angle, k, out_hw).to(x.dtype)
        grid = affine_grid(theta, out_hw)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)

    def _color(self, x: Tensor, s: Sampler, params: dict) -> Tensor:
        """Colour jitter (random order, per sample) then grayscale; RGB-only parts skipped for C != 3."""
        cfg, n, rgb = self.cfg, x.shape[0], x.shape[1] == 3
        ones, zeros = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
        applied = torch.zeros(n, dtype=torch.bool, device=x.device)
        factors = [ones, ones, ones, zeros]
        order = torch.arange(4, device=x.device).expand(n, 4)
        if cfg.jitter_p > 0:
            applied = s.bernoulli(n, cfg.jitter_p)
            strength = 0.8 * cfg.jitter_strength
            bcs = s.uniform((n, 3), max(0.0, 1 - strength), 1 + strength)
            hue_max = min(0.5, 0.2 * cfg.jitter_strength)
            hue = s.uniform((n,), -hue_max, hue_max)
            order = s.permutations(n, 4)
            factors = [torch.where(applied, f, ident) for f, ident in zip([*bcs.unbind(1), hue], [ones, ones, ones, zeros])]
            if not rgb:
                factors[2], factors[3] = ones, zeros
            x = color_jitter(x, *factors, order)
        params.update(jitter=applied, brightness=factors[0], contrast=factors[1], saturation=factors[2], hue=factors[3],
                      jitter_order=order)
        gray = torch.zeros(n, dtype=torch.bool, device=x.device)
        if cfg.grayscale_p > 0 and rgb:
            gray = s.bernoulli(n, cfg.grayscale_p)
            x = torch.where(gray[:, None, None, None], to_grayscale(x), x)
        params["grayscale"] = gray
        return x

    def _blur(self, x: Tensor, s: Sampler, params: dict) -> Tensor:
        """Gaussian blur, sigma uniform in ``cfg.blur_sigma``, kernel ~10% of the side (SimCLR)."""
        n = x.shape[0]
        sigma = torch.zeros(n, device=x.device)
        if self.cfg.blur_p > 0:
            applied = s.bernoulli(n, self.cfg.blur_p)
            sigma = torch.where(applied, s.uniform((n,), *self.cfg.blur_sigma), sigma)
            x = gaussian_blur(x, sigma, blur_kernel_size(min(x.shape[-2:])))
        params["blur_sigma"] = sigma
        return x

    def _solarize(self, x: Tensor, s: Sampler, params: dict) -> Tensor:
        n = x.shape[0]
        applied = torch.zeros(n, dtype=torch.bool, device=x.device)
        if self.cfg.solarize_p > 0:
            applied = s.bernoulli(n, self.cfg.solarize_p)
            x = solarize(x, applied, self.cfg.solarize_threshold)
        params["solarize"] = applied
        return x

    def _jigsaw(self, x: Tensor, s: Sampler, params: dict) -> Tensor:
        g, n = self.cfg.jigsaw_grid, x.shape[0]
        if g < 2 or self.cfg.jigsaw_p <= 0:
            params["jigsaw_perm"] = torch.zeros(n, 0, dtype=torch.long, device=x.device)
            return x
        applied = s.bernoulli(n, self.cfg.jigsaw_p)
        perm = torch.where(applied[:, None], s.permutations(n, g * g), torch.arange(g * g, device=x.device))
        params["jigsaw_perm"] = perm
        return apply_jigsaw(x, g, perm)

    def _cutout(self, x: Tensor, s: Sampler, params: dict) -> Tensor:
        """Zero a rectangle: area uniform in ``cfg.cutout_scale``, log aspect in (0.3, 3.3) (as RandomErasing)."""
        n, (h, w) = x.shape[0], x.shape[-2:]
        boxes = torch.zeros(n, 4, dtype=torch.long, device=x.device)
        if self.cfg.cutout_p > 0:
            applied = s.bernoulli(n, self.cfg.cutout_p)
            area = s.uniform((n,), *self.cfg.cutout_scale) * h * w
            ratio = torch.exp(s.uniform((n,), math.log(CUTOUT_RATIO[0]), math.log(CUTOUT_RATIO[1])))
            bh = torch.sqrt(area * ratio).round().clamp(1, h).long()
            bw = torch.sqrt(area / ratio).round().clamp(1, w).long()
            pos = s.uniform((n, 2))
            y0 = (pos[:, 0] * (h - bh + 1)).long().clamp(max=h - bh)
            x0 = (pos[:, 1] * (w - bw + 1)).long().clamp(max=w - bw)
            boxes = torch.where(applied[:, None], torch.stack([x0, y0, bw, bh], dim=1), boxes)
            x = cutout(x, boxes)
        params["cutout"] = boxes
        return x


class MultiViewAugment:
    """Several views per image: SimCLR's two views (Chen et al. 2020) or SwAV multi-crop (Caron et al. 2020).

    ``n_views`` large views use ``cfg``; ``small_crops`` extra views use the same policy with
    ``crop_scale = small_scale`` at ``small_size`` pixels (default: 96/224 of the large size).
    ``__call__(x [B, C, H, W])`` -> list of ``n_views + small_crops`` tensors (large first),
    and with ``return_params=True`` also the list of their parameter dicts.
    """

    def __init__(self, cfg: AugmentConfig, n_views: int = 2, small_crops: int = 0, small_size: int | None = None,
                 small_scale: tuple[float, float] = (0.05, 0.14)) -> None:
        if n_views < 1 or small_crops < 0:
            raise ValueError(f"need n_views >= 1 and small_crops >= 0, got {n_views}, {small_crops}")
        self.cfg, self.n_views, self.small_crops = cfg, n_views, small_crops
        self.small_size, self.small_scale = small_size, tuple(small_scale)
        self.large = BatchAugment(cfg)

    def small(self, in_hw: tuple[int, int]) -> BatchAugment:
        """The augmenter of the small crops for inputs of size ``in_hw``."""
        large = self.cfg.out_size or min(in_hw)
        size = self.small_size or max(1, round(large * 96 / 224))
        return BatchAugment(replace(self.cfg, crop_scale=self.small_scale, out_size=size))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None, return_params: bool = False):
        augs = [self.large] * self.n_views + [self.small(tuple(x.shape[-2:]))] * self.small_crops
        outs = [aug(x, generator, return_params=True) for aug in augs]
        views = [v for v, _ in outs]
        return (views, [p for _, p in outs]) if return_params else views


_JITTER_NAMES = "bcsh"


def describe_params(params: dict[str, Tensor], i: int) -> dict[str, str | float | bool]:
    """Human-readable parameters of sample ``i`` of one view (for the UI)."""
    out: dict[str, str | float | bool] = {}
    if "crop" in params:
        x0, y0, w, h = params["crop"][i].tolist()
        out["crop"] = f"x={x0:.2f} y={y0:.2f} w={w:.2f} h={h:.2f}"
    if "flip" in params:
        out["flip"] = bool(params["flip"][i])
    if "angle" in params:
        out["rotation"] = round(float(params["angle"][i]), 1)
    if "rot90_k" in params:
        out["rot90"] = float(90 * int(params["rot90_k"][i]))
    if "jitter" in params:
        out["jitter"] = bool(params["jitter"][i])
        for key in ("brightness", "contrast", "saturation", "hue"):
            out[key] = round(float(params[key][i]), 3)
        out["jitter order"] = " ".join(_JITTER_NAMES[j] for j in params["jitter_order"][i].tolist())
    if "grayscale" in params:
        out["grayscale"] = bool(params["grayscale"][i])
    if "blur_sigma" in params:
        out["blur sigma"] = round(float(params["blur_sigma"][i]), 2)
    if "solarize" in params:
        out["solarize"] = bool(params["solarize"][i])
    if "jigsaw_perm" in params and params["jigsaw_perm"].shape[1]:
        out["jigsaw"] = " ".join(str(j) for j in params["jigsaw_perm"][i].tolist())
    if "cutout" in params:
        x0, y0, w, h = params["cutout"][i].tolist()
        out["cutout"] = f"x={x0} y={y0} w={w} h={h}" if w and h else "none"
    return out
