"""The probe's fixed, encoder-independent image features (pixels, intensity, colour, Gabor orientation energy,
layout, random filters, and the absolute brightness, position and size of the content), and which pixels of an
augmented image are content rather than padding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F

from ssl_viz.augment import POLICIES, BatchAugment
from ssl_viz.config import AugmentConfig

PROBE_GROUPS = ("pixels", "intensity", "color", "orientation", "isotropic", "layout", "random-conv", "brightness", "position", "size")

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


def _ring(h: int, w: int) -> torch.Tensor:
    """Flat indices ``[2 (h + w) - 4]`` of the pixels on the border of an ``h x w`` image."""
    border = torch.zeros(h, w, dtype=torch.bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    return border.flatten().nonzero()[:, 0]


def _content(x: torch.Tensor, m: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Background colour ``[N, C]`` and a content mask ``[N, H * W]`` (float 0/1) of ``x [N, C, H, W]``.

    The background is the per-channel median of the valid pixels on the image border (of all valid
    pixels when none of the border is valid); content are the valid pixels whose distance to it is
    more than half the image's 98th-percentile distance (none when that is below 0.02: a flat image).
    """
    n, c, h, w = x.shape
    flat, ring = x.flatten(2), _ring(h, w)                                              # [N, C, HW]
    if m is None:
        bg = flat[:, :, ring].median(2).values                                          # [N, C]
        valid = None
    else:
        valid = m.flatten(1) > 0.5                                                      # [N, HW]
        nan = torch.tensor(float("nan"))
        bg = torch.where(valid[:, None, ring], flat[:, :, ring], nan).nanmedian(2).values
        bg = torch.where(torch.isnan(bg), torch.where(valid[:, None], flat, nan).nanmedian(2).values, bg).nan_to_num(0.0)
    dist = (flat - bg[:, :, None]).pow(2).mean(1).sqrt()                                # [N, HW]
    if valid is not None:
        dist = dist * valid
    q = dist.topk(max(1, (h * w) // 50), dim=1).values[:, -1:]                         # 98th percentile
    return bg, ((dist > 0.5 * q) & (q > 0.02)).to(x.dtype)


_BASES: dict[tuple[int, int], torch.Tensor] = {}


def _basis(h: int, w: int) -> torch.Tensor:
    """``[H * W, 9]``: 1, x, y, x^2, y^2 (pixel centres in [-1, 1], y down) and the four quadrant indicators."""
    if (h, w) not in _BASES:
        ys, xs = torch.meshgrid((torch.arange(h) * 2 + 1) / h - 1, (torch.arange(w) * 2 + 1) / w - 1, indexing="ij")
        quads = [((ys < 0) == top) & ((xs < 0) == left) for top in (True, False) for left in (True, False)]
        cols = [torch.ones_like(xs), xs, ys, xs**2, ys**2] + [q.float() for q in quads]
        _BASES[h, w] = torch.stack([col.flatten() for col in cols], 1)
    return _BASES[h, w]


def _content_features(gray: torch.Tensor, bg_luma: torch.Tensor, content: torch.Tensor,
                      m: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The ``brightness``, ``position`` and ``size`` groups from the luma ``[N, 1, H, W]`` (not standardised),
    the background luma ``[N]`` and the content mask ``[N, H * W]`` (moments of the mask as one matmul)."""
    n, _, h, w = gray.shape
    mom = content @ _basis(h, w).to(content.dtype)                                       # [N, 9]
    mass = mom[:, :1].clamp_min(1.0)
    some = (mom[:, :1] > 0).to(gray.dtype)
    cx, cy = mom[:, 1:2] / mass, mom[:, 2:3] / mass
    spread = ((mom[:, 3:4] + mom[:, 4:5]) / mass - cx**2 - cy**2).clamp_min(0).sqrt()
    quadrants = mom[:, 5:] / mass
    area = mom[:, :1] / (float(h * w) if m is None else m.flatten(1).sum(1, keepdim=True).clamp_min(1.0))
    g = gray.flatten(1)
    luma_in = (content * g).sum(1, keepdim=True) / mass
    sd_in = ((content * g * g).sum(1, keepdim=True) / mass - luma_in**2).clamp_min(0).sqrt()
    luma_all = _masked_mean(gray, m)
    luma_sd = (_masked_mean(gray * gray, m) - luma_all**2).clamp_min(0).sqrt()
    bg = bg_luma[:, None]
    return {
        "brightness": torch.cat([luma_in * some + bg * (1 - some), bg, (luma_in - bg) * some, luma_all, luma_sd, sd_in], 1),
        "position": torch.cat([cx, cy, quadrants], 1),
        "size": torch.cat([area, area.sqrt(), torch.log(area + 1e-3), spread], 1),
    }


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
    so global brightness and contrast do not move the structural features; the last three groups
    read the absolute luma and the *content*, the pixels that differ from the border's median colour):

    * ``pixels``: the standardised image average-pooled to 8x8 (per channel);
    * ``intensity``: 16-bin histogram of the standardised luma;
    * ``colour``: chroma-weighted 12-bin hue histogram (YIQ hue angle), mean chroma / luma,
      mean chromaticity ``rgb / (r + g + b)``; brightness-invariant, erased by grayscale;
    * ``orientation``: Gabor energy of the luma in 8 orientations x 3 scales (a pyramid),
      as a distribution over orientations per scale, plus log total energy per scale;
    * ``isotropic``: the rotation-invariant part of that: |DFT| over orientation and log energy per scale;
    * ``layout``: log Gabor energy per orientation and scale in each image quadrant;
    * ``random-conv``: mean and std of ReLU responses of 48 fixed random 5x5 filters on the luma;
    * ``brightness``: absolute mean luma of the content and of the background, their difference,
      mean and std of the whole image's luma (contrast), std of the content's luma;
    * ``position``: centroid (x, y in [-1, 1]) of the content and its share in each image quadrant;
    * ``size``: content area as a fraction of the image (and its root and log), radius of gyration.
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
            energy = resp.square_().view(n, _N_ORIENT, 2, *resp.shape[-2:]).sum(2)       # [N, O, h, w]
            glob.append(_masked_mean(energy, lm))
            if "layout" in want:
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
    if want & {"brightness", "position", "size"}:
        bg, content = _content(x, m)
        bg_luma = (bg * torch.tensor(_LUMA)).sum(1) if c == 3 else bg.mean(1)
        out.update({k: v for k, v in _content_features(gray, bg_luma, content, m).items() if k in want})
    if "random-conv" in want:
        rc = F.relu_(F.conv2d(gs, _bank("random"), padding=2))                          # [N, 48, H, W]
        mu = _masked_mean(rc, m)
        out["random-conv"] = torch.cat([mu, (_masked_mean(rc.square_(), m) - mu.pow(2)).clamp_min(0).sqrt()], 1)
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
