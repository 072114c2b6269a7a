"""Augmentation policies: named presets, spec strings, range checks, one-transform policies, UI text.

A policy is an :class:`~ssl_viz.config.AugmentConfig`. :func:`parse_policy` reads a preset
name optionally followed by ``+field=value,...`` overrides; :func:`policy_to_spec` writes
the shortest such spec back.
"""

from __future__ import annotations

import typing
from dataclasses import fields, replace
from typing import Any

from ssl_viz.config import AugmentConfig

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
    # (named after its field; the single transform "rotation" is the free angle, ``rotation_degrees``)
    "rotate90": replace(_NONE, rotate90_p=0.75),
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
# the single transforms without a magnitude: their dose is the probability of applying them
PROBABILITY_TRANSFORMS: dict[str, str] = {"grayscale": "grayscale_p", "rotate90": "rotate90_p", "flip": "flip_p"}


def crop_enabled(cfg: AugmentConfig) -> bool:
    """Whether the policy crops (``crop_scale`` starts below 1)."""
    return cfg.crop_scale[0] < 1.0


def geometric_enabled(cfg: AugmentConfig) -> bool:
    """Whether the policy needs the affine resample (crop, flip, free rotation or quarter turns)."""
    return crop_enabled(cfg) or cfg.flip_p > 0 or cfg.rotation_degrees > 0 or cfg.rotate90_p > 0


def describe_policy(cfg: AugmentConfig) -> str:
    """Short human text for a policy, e.g. ``"crop 0.20-1.00 | flip 0.5 | jitter 0.8 (s=0.5) | gray 0.2"``."""
    parts = []
    if crop_enabled(cfg):
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
        parts.append(f"solarize {cfg.solarize_p:g}" + (f" (>= {cfg.solarize_threshold:g})" if cfg.solarize_threshold != 0.5 else ""))
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
    if not 0.0 <= cfg.solarize_threshold <= 1.0:
        problems.append(f"solarize_threshold={cfg.solarize_threshold} must be in [0, 1]")
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
    jigsaw grid 2 (s <= 0.5) or 3, cutout area 0.25 s, solarize threshold 1 - 0.5 s
    (pixels at or above it are inverted; 0.5 at s = 1, as BYOL). Grayscale, flip and
    rotate90 (k in {1, 2, 3}) have no magnitude (see :func:`dose_transform` for their
    probability as the strength).
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
        "solarize": dict(solarize_p=1.0, solarize_threshold=1.0 - 0.5 * s),
        "jigsaw": dict(jigsaw_grid=2 if s <= 0.5 else 3, jigsaw_p=1.0),
        "cutout": dict(cutout_p=1.0, cutout_scale=(area, area)),
    }
    if name not in table:
        raise ValueError(f"unknown single transform {name!r}; choose one of: {', '.join(SINGLE_TRANSFORMS)}")
    return replace(_NONE, **table[name])


def dose_kind(name: str) -> str:
    """``"probability"`` for the single transforms without a magnitude (grayscale, rotate90, flip), else ``"magnitude"``."""
    if name not in SINGLE_TRANSFORMS:
        raise ValueError(f"unknown single transform {name!r}; choose one of: {', '.join(SINGLE_TRANSFORMS)}")
    return "probability" if name in PROBABILITY_TRANSFORMS else "magnitude"


def dose_transform(name: str, strength: float) -> AugmentConfig:
    """The policy of one augmentation at dose ``strength`` in (0, 1] (for dose-response curves).

    Augmentations with a magnitude are :func:`single_transform(name, strength) <single_transform>`
    (applied to every image at that magnitude); for grayscale, flip and rotate90 the strength is
    the probability of applying them (1: :func:`single_transform(name) <single_transform>`).
    Raises ValueError for an unknown name or a strength outside (0, 1].
    """
    if dose_kind(name) == "magnitude":
        return single_transform(name, strength)
    s = float(strength)
    if not 0.0 < s <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    return replace(single_transform(name), **{PROBABILITY_TRANSFORMS[name]: s})
