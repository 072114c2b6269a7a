"""Per-sample random parameters of a batch augmentation, drawn from one ``torch.Generator``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssl_viz.augment.policy import crop_enabled
from ssl_viz.config import AugmentConfig

CROP_TRIES = 10                     # rejection-sampling tries of RandomResizedCrop


class Sampler:
    """Uniform draws from ``generator`` on the generator's device, returned on ``device``."""

    def __init__(self, generator: torch.Generator | None, device: torch.device) -> None:
        self.generator = generator
        self.src = generator.device if generator is not None else device
        self.dst = device

    def uniform(self, shape: tuple[int, ...], lo: float = 0.0, hi: float = 1.0) -> Tensor:
        """Float32 ``shape`` uniform in [lo, hi)."""
        u = torch.rand(shape, generator=self.generator, device=self.src).to(self.dst)
        return lo + (hi - lo) * u

    def bernoulli(self, n: int, p: float) -> Tensor:
        """Bool ``[n]``, True with probability p."""
        return self.uniform((n,)) < p

    def randint(self, n: int, low: int, high: int) -> Tensor:
        """Int64 ``[n]`` uniform in {low, ..., high - 1}."""
        return (self.uniform((n,)) * (high - low)).long().clamp_(max=high - low - 1) + low

    def permutations(self, n: int, k: int) -> Tensor:
        """Int64 ``[n, k]``: one uniform random permutation of range(k) per row."""
        return self.uniform((n, k)).argsort(dim=1)


def sample_crop(s: Sampler, n: int, cfg: AugmentConfig, in_hw: tuple[int, int]) -> Tensor:
    """RandomResizedCrop boxes ``[n, 4]`` as fractions ``(x, y, w, h)`` of the input.

    Area uniform in ``crop_scale``, log aspect ratio (in pixels) uniform in ``crop_ratio``;
    ``CROP_TRIES`` vectorised tries, then the torchvision fallback (the whole image,
    clamped to the ratio range).
    """
    if not crop_enabled(cfg):
        return torch.tensor([0.0, 0.0, 1.0, 1.0], device=s.dst).expand(n, 4).clone()
    h_in, w_in = in_hw
    area = s.uniform((n, CROP_TRIES), *cfg.crop_scale)
    ratio = torch.exp(s.uniform((n, CROP_TRIES), math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])))
    w = torch.sqrt(area * ratio * h_in / w_in)
    h = torch.sqrt(area * w_in / (ratio * h_in))
    ok = (w <= 1.0) & (h <= 1.0)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)
    in_ratio = w_in / h_in
    fw, fh = 1.0, 1.0
    if in_ratio < cfg.crop_ratio[0]:
        fh = w_in / cfg.crop_ratio[0] / h_in
    elif in_ratio > cfg.crop_ratio[1]:
        fw = h_in * cfg.crop_ratio[1] / w_in
    w = torch.where(ok.any(1), w.gather(1, first)[:, 0], torch.full_like(w[:, 0], fw))
    h = torch.where(ok.any(1), h.gather(1, first)[:, 0], torch.full_like(h[:, 0], fh))
    pos = s.uniform((n, 2))
    return torch.stack([pos[:, 0] * (1 - w), pos[:, 1] * (1 - h), w, h], dim=1)
