"""The Train page's augmentation knobs: one on/off switch and one strength per augmentation.

:data:`AUGMENT_KNOBS` describes the sliders; :func:`knobs_from_policy` reads a policy's knob
settings and :func:`policy_from_knobs` writes them back onto a base policy, so
``policy_from_knobs(p, knobs_from_policy(p)) == p``.
"""

from __future__ import annotations

from dataclasses import replace

from ssl_viz.config import AugmentConfig

# knob -> (field it sets, slider label, min, max, step, value of the field when off)
AUGMENT_KNOBS: dict[str, tuple[str, str, float, float, float, object]] = {
    "crop": ("crop_scale", "min crop area", 0.05, 1.0, 0.05, (1.0, 1.0)),
    "flip": ("flip_p", "p", 0.0, 1.0, 0.05, 0.0),
    "rotation": ("rotation_degrees", "max degrees", 0.0, 180.0, 5.0, 0.0),
    "rotate90": ("rotate90_p", "p", 0.0, 1.0, 0.05, 0.0),
    "color jitter": ("jitter_strength", "strength s", 0.1, 2.0, 0.1, None),
    "grayscale": ("grayscale_p", "p", 0.0, 1.0, 0.05, 0.0),
    "blur": ("blur_p", "p", 0.0, 1.0, 0.05, 0.0),
    "solarize": ("solarize_p", "p", 0.0, 1.0, 0.05, 0.0),
    "jigsaw": ("jigsaw_grid", "grid", 2, 4, 1, 0),
    "cutout": ("cutout_p", "p", 0.0, 1.0, 0.05, 0.0),
}


def knobs_from_policy(cfg: AugmentConfig) -> dict[str, tuple[bool, float]]:
    """Each knob's (on, strength) in policy ``cfg``."""
    out = {}
    for knob, (name, _, _lo, hi, _, off) in AUGMENT_KNOBS.items():
        value = getattr(cfg, name)
        if knob == "crop":
            out[knob] = (value[0] < 1.0, float(value[0]) if value[0] < 1.0 else 0.2)
        elif knob == "color jitter":
            out[knob] = (cfg.jitter_p > 0, float(value))
        elif knob == "jigsaw":
            out[knob] = (cfg.jigsaw_grid > 0 and cfg.jigsaw_p > 0, float(value or 2))
        else:
            default = getattr(AugmentConfig(), name) or (0.5 if hi <= 1.0 else 30.0)
            out[knob] = (value != off, float(value if value != off else default))
    return out


def policy_from_knobs(base: AugmentConfig, knobs: dict[str, tuple[bool, float]]) -> AugmentConfig:
    """``base`` with each knob set on (to its strength) or off; unnamed knobs keep ``base``'s values."""
    changes: dict[str, object] = {}
    for knob, (on, value) in knobs.items():
        name, off = AUGMENT_KNOBS[knob][0], AUGMENT_KNOBS[knob][5]
        if knob == "crop":
            hi = base.crop_scale[1] if base.crop_scale[0] < 1.0 else 1.0
            changes[name] = (min(float(value), hi), hi) if on else off
        elif knob == "color jitter":
            changes.update(jitter_strength=float(value), jitter_p=(base.jitter_p or 0.8) if on else 0.0)
        elif knob == "jigsaw":
            changes.update(jigsaw_grid=int(value) if on else 0, jigsaw_p=(base.jigsaw_p or 0.5) if on else 0.0)
        else:
            changes[name] = float(value) if on else off
    return replace(base, **changes)
