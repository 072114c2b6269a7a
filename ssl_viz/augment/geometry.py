"""Crop, flip, free rotation and quarter turns as one affine resample (``F.grid_sample``).

Angles are degrees counter-clockwise; crop boxes are ``(x, y, w, h)`` fractions of the input.
"""

from __future__ import annotations

import torch
from torch import Tensor


def affine_theta(crop: Tensor, flip: Tensor, angle: Tensor, k: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """``[B, 2, 3]`` matrices for ``F.affine_grid``: crop, then flip, then rotate.

    ``crop [B, 4]`` fractions, ``flip [B]`` bool, ``angle [B]`` degrees and ``k [B]`` quarter
    turns, both counter-clockwise. Maps output coords p to input ``c + S F M p`` where M
    undoes the rotation in output pixel units (so non-square outputs are not sheared).
    Quarter turns use exact integer cos/sin so ``k`` alone reproduces ``torch.rot90``.
    """
    x0, y0, w, h = crop.unbind(1)
    phi = torch.deg2rad(angle)
    c, s = torch.cos(phi), torch.sin(phi)
    c90 = torch.tensor([1.0, 0.0, -1.0, 0.0], device=k.device)[k]
    s90 = torch.tensor([0.0, 1.0, 0.0, -1.0], device=k.device)[k]
    cos_t, sin_t = c * c90 - s * s90, s * c90 + c * s90
    aspect = out_hw[0] / out_hw[1]                                                    # H / W
    fx = torch.where(flip, -1.0, 1.0)
    theta = torch.stack([
        torch.stack([w * fx * cos_t, -w * fx * sin_t * aspect, 2 * x0 + w - 1], dim=1),
        torch.stack([h * sin_t / aspect, h * cos_t, 2 * y0 + h - 1], dim=1),
    ], dim=1)
    return theta


def affine_grid(theta: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """``F.affine_grid(theta, [B, C, H', W'], align_corners=False)`` by broadcasting: ``[B, H', W', 2]``.

    Same numbers; on CPU it avoids a batched matmul with inner size 3, which costs
    more than the ``grid_sample`` itself for small images.
    """
    h, w = out_hw
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1      # pixel centres in [-1, 1]
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    t = theta[:, :, :, None, None]                                                     # [B, 2, 3, 1, 1]
    grid = t[:, :, 0] * xs[None, :] + t[:, :, 1] * ys[:, None] + t[:, :, 2]             # [B, 2, H', W']
    return grid.permute(0, 2, 3, 1)
