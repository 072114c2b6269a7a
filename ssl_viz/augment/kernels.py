"""Batched image kernels: per-sample parameters in, ``[B, C, H, W]`` float images in [0, 1] out.

Colour (grayscale, colour jitter; SimCLR, Chen et al. 2020), Gaussian blur, solarize
(BYOL, Grill et al. 2020), jigsaw (Noroozi & Favaro 2016) and cutout (DeVries & Taylor 2017).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_viz.augment.sampling import Sampler

CUTOUT_RATIO = (0.3, 3.3)           # aspect-ratio range of cutout boxes (as RandomErasing)
_GRAY = (0.2989, 0.587, 0.114)      # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def _gray_weights(c: int, like: Tensor) -> Tensor:
    """``[C]`` luma weights: ITU-R 601 for RGB, the channel mean otherwise."""
    if c == 3:
        return torch.tensor(_GRAY, dtype=like.dtype, device=like.device)
    return torch.full((c,), 1.0 / c, dtype=like.dtype, device=like.device)


def to_grayscale(x: Tensor) -> Tensor:
    """Luma of ``x [B, C, H, W]`` replicated to C channels."""
    w = _gray_weights(x.shape[1], x)
    return (x * w[:, None, None]).sum(1, keepdim=True).expand_as(x)


def colorization_view(x: Tensor) -> Tensor:
    """The input of colorization pretext tasks (Zhang et al. 2016): grayscale ``x``, same shape ``[B, C, H, W]``."""
    return to_grayscale(x).contiguous()


_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_YIQ_INV = torch.linalg.inv(_YIQ)


def _yiq_hue_matrices(hue: Tensor) -> Tensor:
    """``[B, 3, 3]`` RGB->RGB hue rotations by ``hue [B]`` turns (a rotation of the YIQ chroma plane).

    Positive hue moves red towards yellow/green, as torchvision's ``adjust_hue``.
    """
    angle = 2 * math.pi * hue.float()
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack([one, zero, zero, zero, cos, sin, zero, -sin, cos], dim=1).view(-1, 3, 3)
    yiq = _YIQ.to(device=hue.device, dtype=torch.float32)
    inv = _YIQ_INV.to(device=hue.device, dtype=torch.float32)
    return inv @ rot @ yiq


def color_jitter(x: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor, hue: Tensor, order: Tensor) -> Tensor:
    """Per-sample colour jitter as in ``ColorJitter``, batched (SimCLR, Chen et al. 2020).

    ``x [B, C, H, W]``; factors ``[B]`` (1, 1, 1, 0 is the identity); ``order [B, 4]`` is a
    permutation of (0 brightness, 1 contrast, 2 saturation, 3 hue) per sample. Each step is
    ``clamp(A x + beta * mean(gray(x)))`` with a per-sample C x C matrix A, so the random
    order costs one batched matmul per step. Saturation blends with the luma; hue rotates
    the YIQ chroma plane (close to, not identical with, torchvision's HSV shift). For
    C != 3 saturation and hue are ignored. Clamps to [0, 1] after every step, as torchvision.
    """
    b, c = x.shape[:2]
    eye = torch.eye(c, dtype=x.dtype, device=x.device).expand(b, c, c)
    bright = brightness.to(x.dtype)[:, None, None] * eye
    contr = contrast.to(x.dtype)[:, None, None] * eye
    if c == 3:
        luma = torch.ones(3, 1, dtype=x.dtype, device=x.device) @ _gray_weights(3, x)[None]   # [3, 3] rows = weights
        sat = saturation.to(x.dtype)[:, None, None]
        satur = sat * eye + (1 - sat) * luma
        hues = _yiq_hue_matrices(hue).to(x.dtype)
    else:
        satur, hues = eye, eye
    mats = torch.stack([bright, contr, satur, hues], dim=1)                  # [B, 4, C, C]
    betas = torch.zeros(b, 4, dtype=x.dtype, device=x.device)
    betas[:, 1] = 1 - contrast.to(x.dtype)                                   # contrast blends with the mean luma
    rows = torch.arange(b, device=x.device)
    w = _gray_weights(c, x)
    shape = x.shape
    x = x.reshape(b, c, -1)                                                  # [B, C, HW]
    for step in range(4):
        op = order[:, step].to(x.device)
        shift = betas[rows, op] * (x.mean(2) @ w)                            # [B]
        x = torch.baddbmm(shift[:, None, None], mats[rows, op], x).clamp_(0.0, 1.0)
    return x.reshape(shape)


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel side of about 10% of the image side, at least 3 (SimCLR)."""
    return max(3, 2 * int(0.05 * size) + 1)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with per-sample ``sigma [B]`` (0 leaves a sample unchanged).

    ``x [B, C, H, W]`` -> same shape; reflect padding, as ``torchvision``'s GaussianBlur.
    Each pass is a sum of K shifted copies weighted per sample (cheaper than a grouped
    convolution with B*C groups for the small kernels of small images).
    """
    b, _, h, w = x.shape
    radius = min(kernel_size // 2, h - 1, w - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.to(x.dtype).clamp_min(1e-6)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).view(b, -1, 1, 1, 1)          # [B, K, 1, 1, 1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")               # [B, C, H+2r, W+2r]
    rows = padded[..., 0:w] * kernel[:, 0]
    for k in range(1, 2 * radius + 1):
        rows.addcmul_(padded[..., k:k + w], kernel[:, k])                             # [B, C, H+2r, W]
    out = rows[..., 0:h, :] * kernel[:, 0]
    for k in range(1, 2 * radius + 1):
        out.addcmul_(rows[..., k:k + h, :], kernel[:, k])
    return out


def apply_jigsaw(x: Tensor, grid: int, perm: Tensor) -> Tensor:
    """Rearrange a ``grid x grid`` patch grid: output patch j is input patch ``perm[b, j]``.

    ``x [B, C, H, W]``, ``perm [B, grid * grid]`` (row-major patch indices). When H or W is not
    divisible by ``grid`` the remainder rows/columns stay in place.
    """
    b, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    hc, wc = ph * grid, pw * grid
    core = x[:, :, :hc, :wc]
    patches = core.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, ph, pw)
    patches = patches[torch.arange(b, device=x.device)[:, None], perm.to(x.device)]
    core = patches.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hc, wc)
    if (hc, wc) == (h, w):
        return core
    out = x.clone()
    out[:, :, :hc, :wc] = core
    return out


def jigsaw(x: Tensor, grid: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Shuffle each image's ``grid x grid`` patches (Noroozi & Favaro 2016).

    ``x [B, C, H, W]`` -> ``(shuffled [B, C, H, W], perm [B, grid * grid])``. Permutations are
    uniform over all of them (Noroozi & Favaro use a fixed set of maximally distant ones).
    """
    perm = Sampler(generator, x.device).permutations(x.shape[0], grid * grid)
    return apply_jigsaw(x, grid, perm), perm


def cutout(x: Tensor, boxes: Tensor, value: float = 0.0) -> Tensor:
    """Fill a per-sample rectangle (DeVries & Taylor 2017). ``boxes [B, 4]`` int ``(x, y, w, h)`` pixels."""
    _, _, h, w = x.shape
    x0, y0, bw, bh = boxes.to(x.device).unbind(1)
    ys = torch.arange(h, device=x.device)[None]
    xs = torch.arange(w, device=x.device)[None]
    in_rows = (ys >= y0[:, None]) & (ys < (y0 + bh)[:, None])                      # [B, H]
    in_cols = (xs >= x0[:, None]) & (xs < (x0 + bw)[:, None])                      # [B, W]
    mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]                   # [B, 1, H, W]
    return x.masked_fill(mask, value)


def solarize(x: Tensor, applied: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert pixels >= threshold in the samples where ``applied [B]`` is True (BYOL, Grill et al. 2020)."""
    flip = applied.to(x.device)[:, None, None, None] & (x >= threshold)
    return torch.where(flip, 1.0 - x, x)
