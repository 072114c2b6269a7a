"""Augmentation policies and contrastive views.

Policies are :class:`~ssl_viz.config.AugmentConfig` values named by the taxonomy
of Jaiswal et al. 2020 ("A Survey on Contrastive Self-supervised Learning"):

* colour: colour jitter, grayscale (colour drop); the colorization view is the
  grayscale input (Zhang et al. 2016, "Colorful Image Colorization");
* geometric: random resized crop, horizontal flip, free rotation, rotation by
  multiples of 90 degrees (Gidaris et al. 2018, "Unsupervised Representation
  Learning by Predicting Image Rotations");
* context: jigsaw shuffle of a g x g patch grid (Noroozi & Favaro 2016,
  "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles")
  and cutout / inpainting masks (DeVries & Taylor 2017, "Improved Regularization
  of Convolutional Neural Networks with Cutout");
* plus Gaussian blur and solarize (SimCLR, Chen et al. 2020; BYOL, Grill et al. 2020).

Two implementations of the same policy:

* :class:`BatchAugment` - the fast path. A whole ``[B, C, H, W]`` batch at once
  on the batch's device; per-sample parameters drawn from a ``torch.Generator``
  (so previews are reproducible and can show what they drew); crop, flip and
  both rotations are one affine resample.
* :func:`v2_transform` - the per-image ``torchvision.transforms.v2`` pipeline
  (PIL or tensor images), for data loaders and as the benchmark baseline.

Conventions: images are float in [0, 1]; angles are degrees counter-clockwise;
boxes are ``(x, y, w, h)`` with x to the right and y down.
"""

from __future__ import annotations

import math
import typing
from dataclasses import fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from ssl_viz.config import AugmentConfig

# --------------------------------------------------------------------------- policies

_NONE = AugmentConfig(crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)

POLICIES: dict[str, AugmentConfig] = {
    # identity: no augmentation at all
    "none": _NONE,
    # SimCLR (Chen et al. 2020) default recipe: crop 0.2-1, flip, jitter p=0.8 s=0.5, grayscale p=0.2
    "simclr": AugmentConfig(),
    # small (28-32 px) images, tuned for time to quality on Fashion-MNIST (bench/RESULTS.md): milder crops, intensity
    # jitter on every view at full strength and BYOL's solarize, so brightness/contrast cannot be a shortcut
    "simclr-small": replace(AugmentConfig(), crop_scale=(0.65, 1.0), jitter_p=1.0, jitter_strength=1.0, solarize_p=0.2),
    # SimCLR ImageNet strength: jitter s=1.0 and Gaussian blur p=0.5
    "simclr-strong": replace(AugmentConfig(), jitter_strength=1.0, blur_p=0.5),
    # BYOL (Grill et al. 2020) symmetrised: its two views use blur 1.0/0.1 and solarize 0/0.2
    "byol": replace(AugmentConfig(), blur_p=0.5, solarize_p=0.1),
    # SwAV (Caron et al. 2020) large crops; small crops come from MultiViewAugment
    "swav": replace(AugmentConfig(), crop_scale=(0.14, 1.0), jitter_strength=1.0, blur_p=0.5),
    # geometric
    "crop": replace(_NONE, crop_scale=(0.2, 1.0)),
    "crop+flip": replace(_NONE, crop_scale=(0.2, 1.0), flip_p=0.5),
    "flip": replace(_NONE, flip_p=0.5),
    # Gidaris et al. 2018: p=0.75 with k in {1,2,3} makes the angle uniform over {0, 90, 180, 270}
    "rotation": replace(_NONE, rotate90_p=0.75),
    "geometric": replace(_NONE, crop_scale=(0.2, 1.0), flip_p=0.5, rotation_degrees=30.0),
    # colour
    "color": replace(_NONE, jitter_p=0.8, jitter_strength=0.5, grayscale_p=0.2),
    "colorization": replace(_NONE, grayscale_p=1.0),
    "blur": replace(_NONE, blur_p=0.5),
    "solarize": replace(_NONE, solarize_p=0.5),
    # context
    "context": replace(_NONE, jigsaw_grid=2, jigsaw_p=0.5, cutout_p=0.5),
    "jigsaw": replace(_NONE, jigsaw_grid=3, jigsaw_p=1.0),
    "cutout": replace(_NONE, cutout_p=1.0),
}

SINGLE_TRANSFORMS: list[str] = [
    "color_jitter", "grayscale", "rotate90", "rotation", "flip", "crop", "blur", "solarize", "jigsaw", "cutout",
]

_CUTOUT_RATIO = (0.3, 3.3)          # aspect-ratio range of cutout boxes (as RandomErasing)
_GRAY = (0.2989, 0.587, 0.114)      # ITU-R 601 luma, as torchvision's rgb_to_grayscale
_CROP_TRIES = 10                    # rejection-sampling tries of RandomResizedCrop


def _crop_enabled(cfg: AugmentConfig) -> bool:
    return cfg.crop_scale[0] < 1.0


def _geometric_enabled(cfg: AugmentConfig) -> bool:
    return _crop_enabled(cfg) or cfg.flip_p > 0 or cfg.rotation_degrees > 0 or cfg.rotate90_p > 0


def describe_policy(cfg: AugmentConfig) -> str:
    """Short human text for a policy, e.g. ``"crop 0.20-1.00 | flip 0.5 | jitter 0.8 (s=0.5) | gray 0.2"``."""
    parts = []
    if _crop_enabled(cfg):
        parts.append(f"crop {cfg.crop_scale[0]:.2f}-{cfg.crop_scale[1]:.2f}")
    if cfg.flip_p > 0:
        parts.append(f"flip {cfg.flip_p:g}")
    if cfg.rotation_degrees > 0:
        parts.append(f"rotate +-{cfg.rotation_degrees:g} deg")
    if cfg.rotate90_p > 0:
        parts.append(f"rot90 {cfg.rotate90_p:g}")
    if cfg.jitter_p > 0:
        parts.append(f"jitter {cfg.jitter_p:g} (s={cfg.jitter_strength:g})")
    if cfg.grayscale_p > 0:
        parts.append(f"gray {cfg.grayscale_p:g}")
    if cfg.blur_p > 0:
        parts.append(f"blur {cfg.blur_p:g} (sigma {cfg.blur_sigma[0]:g}-{cfg.blur_sigma[1]:g})")
    if cfg.solarize_p > 0:
        parts.append(f"solarize {cfg.solarize_p:g}")
    if cfg.jigsaw_grid > 0 and cfg.jigsaw_p > 0:
        parts.append(f"jigsaw {cfg.jigsaw_grid}x{cfg.jigsaw_grid} {cfg.jigsaw_p:g}")
    if cfg.cutout_p > 0:
        parts.append(f"cutout {cfg.cutout_p:g}")
    if cfg.out_size is not None:
        parts.append(f"-> {cfg.out_size}px")
    return " | ".join(parts) if parts else "identity (no augmentation)"


def validate_policy(cfg: AugmentConfig) -> AugmentConfig:
    """Check ranges (probabilities in [0, 1], ordered ranges, ...); returns ``cfg`` or raises ValueError."""
    problems = []
    for name in ("flip_p", "rotate90_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p", "jigsaw_p", "cutout_p"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            problems.append(f"{name}={getattr(cfg, name)} must be in [0, 1]")
    for name, low in (("crop_scale", 0.0), ("crop_ratio", 0.0), ("blur_sigma", 0.0), ("cutout_scale", 0.0)):
        lo, hi = getattr(cfg, name)
        if not (low < lo <= hi):
            problems.append(f"{name}={getattr(cfg, name)} needs {low} < lo <= hi")
    for name in ("crop_scale", "cutout_scale"):
        if getattr(cfg, name)[1] > 1.0:
            problems.append(f"{name}={getattr(cfg, name)} must not exceed 1")
    if cfg.rotation_degrees < 0 or cfg.jitter_strength < 0:
        problems.append("rotation_degrees and jitter_strength must be >= 0")
    if cfg.jigsaw_grid < 0 or cfg.jigsaw_grid == 1:
        problems.append(f"jigsaw_grid={cfg.jigsaw_grid} must be 0 (off) or >= 2")
    if cfg.out_size is not None and cfg.out_size < 1:
        problems.append(f"out_size={cfg.out_size} must be a positive int or None")
    if problems:
        raise ValueError("invalid augmentation policy: " + "; ".join(problems))
    return cfg


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(AugmentConfig)


def _parse_value(name: str, text: str, hint: Any) -> Any:
    """Parse one override value according to the field's type hint."""
    text = text.strip()
    args = typing.get_args(hint)
    try:
        if typing.get_origin(hint) is tuple:
            parts = text.split(":")
            if len(parts) != len(args):
                raise ValueError
            return tuple(float(p) for p in parts)
        if type(None) in args:  # int | None
            return None if text.lower() in ("none", "") else int(text)
        return hint(text)
    except ValueError:
        shape = "lo:hi" if typing.get_origin(hint) is tuple else getattr(hint, "__name__", str(hint))
        raise ValueError(f"bad value {text!r} for {name!r}: expected {shape}") from None


def parse_policy(spec: str) -> AugmentConfig:
    """A policy from a spec string: a preset name, optionally followed by ``+`` and overrides.

    Examples: ``"simclr"``, ``"simclr+rotate90_p=0.5,blur_p=0.3"``, ``"none+crop_scale=0.5:1.0"``,
    ``"crop+flip+out_size=24"``. Tuples are written ``lo:hi``; ``out_size=none`` clears it.
    Raises ValueError naming the valid presets / fields.
    """
    spec = spec.strip()
    if spec in POLICIES:
        return POLICIES[spec]
    pieces = spec.split("+")
    for cut in range(len(pieces) - 1, 0, -1):  # longest preset prefix (preset names may contain "+")
        name = "+".join(pieces[:cut]).strip()
        if name in POLICIES:
            break
    else:
        raise ValueError(f"unknown augmentation policy {spec!r}; presets: {', '.join(POLICIES)} "
                         "(optionally followed by '+field=value,...')")
    hints = _field_types()
    overrides: dict[str, Any] = {}
    for item in ",".join(pieces[cut:]).split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"bad override {item!r} in {spec!r}: expected field=value; presets: {', '.join(POLICIES)}")
        if key not in hints:
            raise ValueError(f"unknown augmentation field {key!r} in {spec!r}; fields: {', '.join(hints)}")
        overrides[key] = _parse_value(key, value, hints[key])
    return validate_policy(replace(POLICIES[name], **overrides))


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ":".join(repr(float(v)) for v in value)
    return repr(value)


def policy_to_spec(cfg: AugmentConfig) -> str:
    """The shortest ``preset+field=value,...`` spec with ``parse_policy(policy_to_spec(cfg)) == cfg``."""
    def diff(base: AugmentConfig) -> list[str]:
        return [f.name for f in fields(cfg) if getattr(cfg, f.name) != getattr(base, f.name)]

    name = min(POLICIES, key=lambda n: len(diff(POLICIES[n])))
    changed = diff(POLICIES[name])
    if not changed:
        return name
    return name + "+" + ",".join(f"{k}={_format_value(getattr(cfg, k))}" for k in changed)


def single_transform(name: str, strength: float = 1.0) -> AugmentConfig:
    """A policy of one augmentation only, applied with probability 1 (for invariance diagnosis).

    ``strength`` in (0, 1] scales the magnitude where one exists: jitter strength s,
    crop area 1 - 0.8 s, free rotation up to 180 s degrees, blur sigma 2 s,
    jigsaw grid 2 (s <= 0.5) or 3, cutout area 0.25 s. Grayscale, flip, rotate90
    (k in {1, 2, 3}) and solarize have no magnitude.
    """
    s = float(strength)
    if not 0.0 < s <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    area = max(0.01, 0.25 * s)
    sigma = max(0.1, 2.0 * s)
    table = {
        "color_jitter": dict(jitter_p=1.0, jitter_strength=s),
        "grayscale": dict(grayscale_p=1.0),
        "rotate90": dict(rotate90_p=1.0),
        "rotation": dict(rotation_degrees=180.0 * s),
        "flip": dict(flip_p=1.0),
        "crop": dict(crop_scale=(1.0 - 0.8 * s, 1.0 - 0.8 * s)),
        "blur": dict(blur_p=1.0, blur_sigma=(sigma, sigma)),
        "solarize": dict(solarize_p=1.0),
        "jigsaw": dict(jigsaw_grid=2 if s <= 0.5 else 3, jigsaw_p=1.0),
        "cutout": dict(cutout_p=1.0, cutout_scale=(area, area)),
    }
    if name not in table:
        raise ValueError(f"unknown single transform {name!r}; choose one of: {', '.join(SINGLE_TRANSFORMS)}")
    return replace(_NONE, **table[name])


# --------------------------------------------------------------------------- randomness


class _Sampler:
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


# --------------------------------------------------------------------------- kernels


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
    perm = _Sampler(generator, x.device).permutations(x.shape[0], grid * grid)
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


# --------------------------------------------------------------------------- geometry


def _sample_crop(s: _Sampler, n: int, cfg: AugmentConfig, in_hw: tuple[int, int]) -> Tensor:
    """RandomResizedCrop boxes ``[n, 4]`` as fractions ``(x, y, w, h)`` of the input.

    Area uniform in ``crop_scale``, log aspect ratio (in pixels) uniform in ``crop_ratio``;
    ``_CROP_TRIES`` vectorised tries, then the torchvision fallback (the whole image,
    clamped to the ratio range).
    """
    if not _crop_enabled(cfg):
        return torch.tensor([0.0, 0.0, 1.0, 1.0], device=s.dst).expand(n, 4).clone()
    h_in, w_in = in_hw
    area = s.uniform((n, _CROP_TRIES), *cfg.crop_scale)
    ratio = torch.exp(s.uniform((n, _CROP_TRIES), math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])))
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


def _affine_theta(crop: Tensor, flip: Tensor, angle: Tensor, k: Tensor, out_hw: tuple[int, int]) -> Tensor:
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


# --------------------------------------------------------------------------- batch path


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
        s = _Sampler(generator, x.device)
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

    def _geometry(self, x: Tensor, s: _Sampler, params: dict) -> Tensor:
        """Crop + flip + rotation + rot90 as one ``grid_sample`` per batch: ``[B, C, H, W] -> [B, C, H', W']``."""
        cfg, n, out_hw = self.cfg, x.shape[0], self._out_hw(x)
        crop = _sample_crop(s, n, cfg, tuple(x.shape[-2:]))
        flip = s.bernoulli(n, cfg.flip_p) if cfg.flip_p > 0 else torch.zeros(n, dtype=torch.bool, device=x.device)
        angle = torch.zeros(n, device=x.device)
        if cfg.rotation_degrees > 0:
            angle = s.uniform((n,), -cfg.rotation_degrees, cfg.rotation_degrees)
        k = torch.zeros(n, dtype=torch.long, device=x.device)
        if cfg.rotate90_p > 0:
            k = torch.where(s.bernoulli(n, cfg.rotate90_p), s.randint(n, 1, 4), k)
        params.update(crop=crop, flip=flip, angle=angle, rot90_k=k)
        if not _geometric_enabled(cfg):
            if out_hw == tuple(x.shape[-2:]):
                return x
            return F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=True)
        theta = _affine_theta(crop, flip, angle, k, out_hw).to(x.dtype)
        grid = affine_grid(theta, out_hw)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)

    def _color(self, x: Tensor, s: _Sampler, params: dict) -> Tensor:
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

    def _blur(self, x: Tensor, s: _Sampler, params: dict) -> Tensor:
        """Gaussian blur, sigma uniform in ``cfg.blur_sigma``, kernel ~10% of the side (SimCLR)."""
        n = x.shape[0]
        sigma = torch.zeros(n, device=x.device)
        if self.cfg.blur_p > 0:
            applied = s.bernoulli(n, self.cfg.blur_p)
            sigma = torch.where(applied, s.uniform((n,), *self.cfg.blur_sigma), sigma)
            x = gaussian_blur(x, sigma, blur_kernel_size(min(x.shape[-2:])))
        params["blur_sigma"] = sigma
        return x

    def _solarize(self, x: Tensor, s: _Sampler, params: dict) -> Tensor:
        n = x.shape[0]
        applied = torch.zeros(n, dtype=torch.bool, device=x.device)
        if self.cfg.solarize_p > 0:
            applied = s.bernoulli(n, self.cfg.solarize_p)
            x = solarize(x, applied)
        params["solarize"] = applied
        return x

    def _jigsaw(self, x: Tensor, s: _Sampler, params: dict) -> Tensor:
        g, n = self.cfg.jigsaw_grid, x.shape[0]
        if g < 2 or self.cfg.jigsaw_p <= 0:
            params["jigsaw_perm"] = torch.zeros(n, 0, dtype=torch.long, device=x.device)
            return x
        applied = s.bernoulli(n, self.cfg.jigsaw_p)
        perm = torch.where(applied[:, None], s.permutations(n, g * g), torch.arange(g * g, device=x.device))
        params["jigsaw_perm"] = perm
        return apply_jigsaw(x, g, perm)

    def _cutout(self, x: Tensor, s: _Sampler, params: dict) -> Tensor:
        """Zero a rectangle: area uniform in ``cfg.cutout_scale``, log aspect in (0.3, 3.3) (as RandomErasing)."""
        n, (h, w) = x.shape[0], x.shape[-2:]
        boxes = torch.zeros(n, 4, dtype=torch.long, device=x.device)
        if self.cfg.cutout_p > 0:
            applied = s.bernoulli(n, self.cfg.cutout_p)
            area = s.uniform((n,), *self.cfg.cutout_scale) * h * w
            ratio = torch.exp(s.uniform((n,), math.log(_CUTOUT_RATIO[0]), math.log(_CUTOUT_RATIO[1])))
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


# --------------------------------------------------------------------------- display


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


# --------------------------------------------------------------------------- per-image torchvision v2 path


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
    if _crop_enabled(cfg):
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
        ops.append(v2.RandomSolarize(0.5, p=cfg.solarize_p))
    if cfg.jigsaw_grid >= 2 and cfg.jigsaw_p > 0:
        ops.append(Jigsaw(cfg.jigsaw_grid, cfg.jigsaw_p))
    if cfg.cutout_p > 0:
        ops.append(v2.RandomErasing(p=cfg.cutout_p, scale=cfg.cutout_scale, ratio=_CUTOUT_RATIO, value=0.0))
    return v2.Compose(ops)
