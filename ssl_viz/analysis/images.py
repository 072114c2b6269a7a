"""Image helpers shared by the visualisers: tensors to displayable arrays, grids, overlays, thumbnails."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def to_hwc_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """One image ``[C, H, W]`` (float in [0, 1] or uint8) -> ``[H, W, 3]`` uint8 (grayscale replicated)."""
    t = torch.as_tensor(x).detach().cpu()
    if t.dtype != torch.uint8:
        t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t.permute(1, 2, 0).contiguous().numpy()


def normalize_map(m: torch.Tensor | np.ndarray, symmetric: bool = False) -> np.ndarray:
    """Scale a map to [0, 1] (min-max), or to [-1, 1] by max |value| when ``symmetric``."""
    a = np.asarray(torch.as_tensor(m).detach().cpu().float())
    if symmetric:
        scale = np.abs(a).max()
        return a / scale if scale > 0 else a
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def make_grid(images: list[np.ndarray] | np.ndarray, ncols: int = 8, pad: int = 1, pad_value: int = 255, upscale: int = 1) -> np.ndarray:
    """Tile ``[N, H, W, 3]`` uint8 images into one ``[rows*H', cols*W', 3]`` array."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    n, h, w, c = images.shape
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
        h, w = h * upscale, w * upscale
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = images[i]
    return grid


def colormap(values: np.ndarray, name: str = "inferno") -> np.ndarray:
    """Map a ``[H, W]`` array in [0, 1] to ``[H, W, 3]`` uint8 with a matplotlib-free colormap."""
    stops = {
        "inferno": [(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)],
        "rdbu": [(5, 48, 97), (67, 147, 195), (247, 247, 247), (214, 96, 77), (103, 0, 31)],
    }[name]
    stops = np.asarray(stops, dtype=np.float32)
    v = np.clip(np.asarray(values, dtype=np.float32), 0, 1) * (len(stops) - 1)
    lo = np.floor(v).astype(int).clip(0, len(stops) - 2)
    frac = (v - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[lo + 1] * frac).round().astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a ``[h, w]`` heat map in [0, 1] (resized to the image) over ``[H, W, 3]`` uint8."""
    h, w = image.shape[:2]
    heat_t = torch.as_tensor(np.asarray(heat, dtype=np.float32))[None, None]
    heat_r = F.interpolate(heat_t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    colored = colormap(heat_r)
    return (image.astype(np.float32) * (1 - alpha) + colored.astype(np.float32) * alpha).round().astype(np.uint8)


def upscale(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upscale of ``[H, W, 3]`` so the longer side is about ``size`` (keeps pixels crisp)."""
    factor = max(1, size // max(image.shape[:2]))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def png_data_uri(image: np.ndarray, size: int | None = None) -> str:
    """A ``data:image/png;base64,...`` URI of ``[H, W, 3]`` uint8 (for plotly hover thumbnails)."""
    pil = Image.fromarray(image)
    if size:
        pil = pil.resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
