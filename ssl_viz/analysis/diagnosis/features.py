"""The probe's fixed, encoder-independent image features (pixels, intensity, colour, Gabor orientation energy,
layout, random filters), and which pixels of an augmented image are content rather than padding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F

from ssl_viz.augment import POLICIES, BatchAugment
from ssl_viz.config import AugmentConfig

PROBE_GROUPS = ("pixels", "intensity", "color", "orientation", "isotropic", "layout", "random-conv")

_LUMA = (0.2989, 0.587, 0.114)
_N_ORIENT = 8
_GABOR_WAVELENGTH = 4.0        # pixels, at every level of a 3-level pyramid: 4, 8, 16 px at full resolution
_RANDOM_FILTERS = 48


def _masked_mean(v: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """``v [N, K, H, W]``, mask ``m [N, 1, H, W]`` (None: every pixel) -> ``[N, K]``."""
    if m is None:
        return v.mean((2, 3))
    return (v * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1.0)


def _histogram(v: torch.Tensor, m: torch.Tensor | None, bins: int, lo: float, hi: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Masked (optionally weighted) histogram of ``v [N, 1, H, W]`` -> ``[N, bins]``, as a fraction of valid pixels."""
    idx = ((v - lo) / (hi - lo) * bins).long().clamp(0, bins - 1).flatten(1)
    w = torch.ones_like(v) if m is None else m.expand_as(v)
    w = (w if weight is None else w * weight).flatten(1)
    hist = torch.zeros(v.shape[0], bins, dtype=v.dtype).scatter_add_(1, idx, w)
    valid = float(idx.shape[1]) if m is None else m.flatten(1).sum(1, keepdim=True).clamp_min(1.0)
    return hist / valid


def _standardize(v: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """Per-image zero mean, unit variance over the valid pixels (all channels together); 0 outside the mask."""
    mu = _masked_mean(v.mean(1, keepdim=True), m)[:, :, None, None]
    sd = _masked_mean((v - mu).pow(2).mean(1, keepdim=True), m).sqrt()[:, :, None, None].clamp_min(1e-3)
    out = (v - mu) / sd
    return out if m is None else out * m


def _pooled(v: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``v [N, K, H, W]`` over each image quadrant (valid pixels only): ``[N, K, 2, 2]``."""
    if m is None:
        return F.adaptive_avg_pool2d(v, 2)
    return F.adaptive_avg_pool2d(v * m, 2) / F.adaptive_avg_pool2d(m, 2).clamp_min(1e-3)


def gabor_bank(wavelength: float = _GABOR_WAVELENGTH, n_orient: int = _N_ORIENT) -> torch.Tensor:
    """Even/odd Gabor pairs ``[2 * n_orient, 1, k, k]`` (unit norm, even ones zero-mean).

    Pair ``i`` responds to stripes running at ``180 i / n_orient`` degrees counter-clockwise.
    """
    sigma = 0.45 * wavelength
    k = 2 * math.ceil(2 * sigma) + 1
    r = torch.arange(k, dtype=torch.float32) - k // 2
    yy, xx = torch.meshgrid(-r, r, indexing="ij")                      # y up
    env = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    filters = []
    for i in range(n_orient):
        th = math.pi * i / n_orient
        u = -xx * math.sin(th) + yy * math.cos(th)                      # across stripes running at th
        even = env * torch.cos(2 * math.pi * u / wavelength)
        even = even - even.mean()
        odd = env * torch.sin(2 * math.pi * u / wavelength)
        filters += [even / even.norm(), odd / odd.norm()]
    return torch.stack(filters)[:, None]


def _random_filters(seed: int = 0) -> torch.Tensor:
    """A fixed bank of zero-mean, unit-norm random 5x5 filters ``[48, 1, 5, 5]``."""
    k = torch.randn(_RANDOM_FILTERS, 1, 5, 5, generator=torch.Generator().manual_seed(seed))
    k = k - k.mean((1, 2, 3), keepdim=True)
    return k / k.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


_BANKS: dict[str, torch.Tensor] = {}


def _bank(name: str) -> torch.Tensor:
    if name not in _BANKS:
        _BANKS[name] = gabor_bank() if name == "gabor" else _random_filters()
    return _BANKS[name]


@torch.no_grad()
def probe_features(x: torch.Tensor, mask: torch.Tensor | None = None, groups: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The probe's fixed, encoder-independent features, by group.

    Args:
        x: ``[N, C, H, W]`` float in [0, 1] (uint8 is converted), C in {1, 3}.
        mask: ``[N, 1, H, W]`` 1 where a pixel is image content, 0 where it is padding
            (e.g. the corners a free rotation fills with zeros); None: all content.
        groups: which of :data:`PROBE_GROUPS` to compute (default all; ``colour`` only for RGB).

    Groups (every spatial pooling is over the mask; luma and images are standardised per image,
    so global brightness and contrast do not move the structural features):

    * ``pixels``: the standardised image average-pooled to 8x8 (per channel);
    * ``intensity``: 16-bin histogram of the standardised luma;
    * ``colour``: chroma-weighted 12-bin hue histogram (YIQ hue angle), mean chroma / luma,
      mean chromaticity ``rgb / (r + g + b)``; brightness-invariant, erased by grayscale;
    * ``orientation``: Gabor energy of the luma in 8 orientations x 3 scales (a pyramid),
      as a distribution over orientations per scale, plus log total energy per scale;
    * ``isotropic``: the rotation-invariant part of that: |DFT| over orientation and log energy per scale;
    * ``layout``: log Gabor energy per orientation and scale in each image quadrant;
    * ``random-conv``: mean and std of ReLU responses of 48 fixed random 5x5 filters on the luma.
    """
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    n, c, h, w = x.shape
    m = None if mask is None or bool(mask.all()) else mask.float()
    if min(h, w) < 16:  # tiny images (digits 8x8): upsample so the filters fit
        size = (round(h * 16 / min(h, w)), round(w * 16 / min(h, w)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if m is not None:
            m = (F.interpolate(m, size=size, mode="bilinear", align_corners=False) > 0.99).float()
        h, w = size
    want = set(groups or PROBE_GROUPS)
    out: dict[str, torch.Tensor] = {}
    gray = (x * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True) if c == 3 else x.mean(1, keepdim=True)
    gs = _standardize(gray, m)
    if "pixels" in want:
        out["pixels"] = F.adaptive_avg_pool2d(_standardize(x, m), (8, 8)).flatten(1)
    if "intensity" in want:
        out["intensity"] = _histogram(gs, m, 16, -2.5, 2.5)
    if "color" in want and c == 3:
        i_ = 0.596 * x[:, 0] - 0.274 * x[:, 1] - 0.322 * x[:, 2]
        q_ = 0.211 * x[:, 0] - 0.523 * x[:, 1] + 0.312 * x[:, 2]
        chroma = torch.sqrt(i_**2 + q_**2)[:, None]
        hue = _histogram(torch.atan2(q_, i_)[:, None], m, 12, -math.pi, math.pi, chroma)
        rel = _masked_mean(chroma, m) / _masked_mean(gray, m).clamp_min(1e-3)
        chromaticity = _masked_mean(x / x.sum(1, keepdim=True).clamp_min(1e-3), m)
        out["color"] = torch.cat([hue / hue.sum(1, keepdim=True).clamp_min(1e-6), rel, chromaticity], 1)
    if want & {"orientation", "isotropic", "layout"}:
        bank = _bank("gabor")
        glob, quad = [], []
        level, lm = gs, m
        for _ in range(3):
            resp = F.conv2d(level, bank, padding=bank.shape[-1] // 2)
            energy = resp.pow(2).view(n, _N_ORIENT, 2, *resp.shape[-2:]).sum(2)          # [N, O, h, w]
            glob.append(_masked_mean(energy, lm))
            quad.append(_pooled(energy, lm))
            if min(level.shape[-2:]) < 8:
                break
            level, lm = F.avg_pool2d(level, 2), None if lm is None else (F.avg_pool2d(lm, 2) > 0.99).float()
        energy = torch.stack(glob, 1)                                                   # [N, S, O]
        dist = energy / energy.sum(2, keepdim=True).clamp_min(1e-8)
        log_total = torch.log(energy.mean(2) + 1e-4)                                    # [N, S]
        if "orientation" in want:
            out["orientation"] = torch.cat([dist.flatten(1), log_total], 1)
        if "isotropic" in want:
            out["isotropic"] = torch.cat([torch.fft.rfft(dist, dim=2).abs()[:, :, 1:].flatten(1), log_total], 1)
        if "layout" in want:
            out["layout"] = torch.log(torch.cat([q.flatten(1) for q in quad], 1) + 1e-4)
    if "random-conv" in want:
        rc = F.relu(F.conv2d(gs, _bank("random"), padding=2))
        mu = _masked_mean(rc, m)
        out["random-conv"] = torch.cat([mu, (_masked_mean(rc.pow(2), m) - mu.pow(2)).clamp_min(0).sqrt()], 1)
    return out


def content_mask(cfg: AugmentConfig, shape: Sequence[int], seed: int) -> torch.Tensor | None:
    """Which pixels of ``BatchAugment(cfg)(x, Generator().manual_seed(seed))`` are image content: ``[N, 1, H', W']``.

    The geometric part of ``cfg`` is replayed on an all-ones image with the same seed (geometry
    draws its parameters first, so the draws match); pixels that come out below 1 are padding.
    None when the policy cannot pad (no free rotation).
    """
    if cfg.rotation_degrees <= 0:
        return None
    geo = replace(POLICIES["none"], flip_p=cfg.flip_p, crop_scale=cfg.crop_scale, crop_ratio=cfg.crop_ratio,
                  rotation_degrees=cfg.rotation_degrees, rotate90_p=cfg.rotate90_p, out_size=cfg.out_size)
    ones = torch.ones(shape[0], 1, *shape[2:])
    return (BatchAugment(geo)(ones, torch.Generator().manual_seed(seed)) > 0.99).float()
