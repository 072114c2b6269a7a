"""The per-image ``torchvision.transforms.v2`` twin of a policy (PIL or tensor images).

For data loaders and as the benchmark baseline of :class:`~ssl_viz.augment.BatchAugment`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from ssl_viz.augment.kernels import CUTOUT_RATIO, apply_jigsaw, blur_kernel_size
from ssl_viz.augment.policy import crop_enabled, validate_policy
from ssl_viz.config import AugmentConfig


def _is_image(inpt: Any) -> bool:
    """Images and plain tensors (not boxes, masks or other TVTensors)."""
    return isinstance(inpt, tv_tensors.Image) or (isinstance(inpt, Tensor) and not isinstance(inpt, tv_tensors.TVTensor))


def _like(out: Tensor, inpt: Tensor) -> Tensor:
    return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class RandomRot90(v2.Transform):
    """Rotate a ``[..., C, H, W]`` tensor image by k * 90 degrees counter-clockwise, k uniform in {1, 2, 3} (Gidaris et al. 2018)."""

    _transformed_types = (_is_image,)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(1, 4, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _like(torch.rot90(inpt.as_subclass(Tensor), params["k"], dims=(-2, -1)), inpt)


class Jigsaw(v2.Transform):
    """Shuffle a ``grid x grid`` patch grid of a ``[C, H, W]`` tensor image with probability p (Noroozi & Favaro 2016)."""

    _transformed_types = (_is_image,)

    def __init__(self, grid: int, p: float = 1.0) -> None:
        super().__init__()
        self.grid, self.p = grid, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        n = self.grid * self.grid
        perm = torch.randperm(n) if torch.rand(()) < self.p else torch.arange(n)
        return {"perm": perm}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = apply_jigsaw(inpt.as_subclass(Tensor)[None], self.grid, params["perm"][None])[0]
        return _like(out, inpt)


def v2_transform(cfg: AugmentConfig, size: int) -> v2.Compose:
    """The same policy as a per-image ``torchvision.transforms.v2`` pipeline.

    Accepts a PIL image or a ``[C, H, W]`` uint8/float tensor; returns a float32 ``[C, size, size]``
    image in [0, 1]. Same order and distributions as :class:`BatchAugment`, except that the hue
    shift is torchvision's HSV one, crops are whole pixels and resizing is antialiased.
    """
    cfg = validate_policy(cfg)
    ops: list[v2.Transform] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if crop_enabled(cfg):
        ops.append(v2.RandomResizedCrop(size, scale=cfg.crop_scale, ratio=cfg.crop_ratio, antialias=True))
    else:
        ops.append(v2.Resize((size, size), antialias=True))
    if cfg.flip_p > 0:
        ops.append(v2.RandomHorizontalFlip(cfg.flip_p))
    if cfg.rotation_degrees > 0:
        ops.append(v2.RandomRotation(cfg.rotation_degrees, interpolation=v2.InterpolationMode.BILINEAR))
    if cfg.rotate90_p > 0:
        ops.append(v2.RandomApply([RandomRot90()], p=cfg.rotate90_p))
    if cfg.jitter_p > 0:
        s = cfg.jitter_strength
        jitter = v2.ColorJitter(brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=min(0.5, 0.2 * s))
        ops.append(v2.RandomApply([jitter], p=cfg.jitter_p))
    if cfg.grayscale_p > 0:
        ops.append(v2.RandomGrayscale(cfg.grayscale_p))
    if cfg.blur_p > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(blur_kernel_size(size), sigma=cfg.blur_sigma)], p=cfg.blur_p))
    if cfg.solarize_p > 0:
        ops.append(v2.RandomSolarize(cfg.solarize_threshold, p=cfg.solarize_p))
    if cfg.jigsaw_grid >= 2 and cfg.jigsaw_p > 0:
        ops.append(Jigsaw(cfg.jigsaw_grid, cfg.jigsaw_p))
    if cfg.cutout_p > 0:
        ops.append(v2.RandomErasing(p=cfg.cutout_p, scale=cfg.cutout_scale, ratio=CUTOUT_RATIO, value=0.0))
    return v2.Compose(ops)
