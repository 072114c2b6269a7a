"""From dose-response curves to verdicts per strength and a recommended augmentation policy.

The recommendation follows Tian et al. 2020 ("What Makes for Good Views for Contrastive Learning?"):
the two views should share as little as possible beyond what the label needs, so each augmentation
goes in at the strongest setting that is still safe for the label. Magnitudes become ranges up to
that setting (crop areas from the smallest safe one to 1, as SimCLR's RandomResizedCrop; blur sigma
and cutout areas up to it); augmentations without a magnitude (flip, grayscale, rotate90) go in at
their usual probability only when they are safe even when applied to every image. Probabilities
follow SimCLR's recipe (Chen et al. 2020: jitter 0.8, grayscale 0.2, flip 0.5, blur 0.5) and BYOL's
solarize (Grill et al. 2020: 0.2).

The views are built from the augmentations of those recipes (:data:`VIEW_AUGMENTATIONS`) plus quarter
turns. Free rotation, jigsaw and cutout are measured but left out unless asked for (``extras``): they
pad, cut or rearrange the image (black corners, seams, holes), SimCLR's study of single views found
them weaker than crop and colour, and on Fashion-MNIST (2 epochs of SimCLR, 2 CPU cores) adding them
and blur at their safe strengths cost 2 points of kNN accuracy. Blur goes in only for images of 64
pixels or more (SimCLR leaves it out for CIFAR-10's 32-pixel images).

The probe bounds each strength from above only (how much the label survives); Tian et al. also find a
lower bound, a sweet spot beyond which views share too little and the encoder learns less. For small images
whose label the crop can destroy (its curve turns harmful somewhere in the measured range: the label lives in
the object's shape, extent, place or orientation) that bound is measured, not probed: on images of at most
:data:`SMALL_IMAGE_SIZE` pixels such a crop keeps at least :data:`SMALL_IMAGE_CROP_FLOOR` of the area
(``simclr-small``'s 65 %). Measured in 120 s SimCLR runs on 2 CPU cores (bench/RESULTS.md, "Diagnosis verified by
training"): on Fashion-MNIST crops down to 20 % of the area cost 2.6 points of kNN against 65 %; crops to 36 % that
the probe called safe for shapes by orientation reached 0.277 where 65 % reached 0.411. Where no crop is harmful
(stationary textures, whose identity survives any crop) the full safe range stays: flooring textures by source
at 65 % cost 2 points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ssl_viz.analysis.diagnosis.report import AugmentationReport, Thresholds
from ssl_viz.augment import POLICIES, dose_transform
from ssl_viz.config import AugmentConfig

# probability of each augmentation in a recommended policy (SimCLR's recipe; BYOL's solarize; 0.5 for the others)
RECOMMENDED_P = {"color_jitter": 0.8, "grayscale": 0.2, "flip": 0.5, "rotate90": 0.5, "blur": 0.5, "solarize": 0.2,
                 "jigsaw": 0.5, "cutout": 0.5}
# the augmentations a recommended policy is built from by default (the others only when named in ``extras``)
VIEW_AUGMENTATIONS = ("crop", "flip", "rotate90", "color_jitter", "grayscale", "blur", "solarize")
MIN_BLUR_SIZE = 64              # blur is recommended for images at least this many pixels on a side
SMALL_IMAGE_SIZE = 32           # images at most this many pixels on a side are "small" (CIFAR, Fashion-MNIST, digits)
SMALL_IMAGE_CROP_FLOOR = POLICIES["simclr-small"].crop_scale[0]   # smallest crop area recommended for small images


def _r(value: float) -> float:
    """``value`` rounded to 3 decimals (specs stay short: 0.36, not 0.3599999999999999)."""
    return round(float(value), 3)


def is_safe(report: AugmentationReport, thresholds: Thresholds = Thresholds()) -> bool:
    """Safe for the label: not harmful, and label damage at most ``thresholds.safe``."""
    return report.verdict != "harmful" and report.label_damage <= thresholds.safe


def recommend_policy(curves: Sequence, thresholds: Thresholds = Thresholds(), base: AugmentConfig | None = None,
                     extras: Sequence[str] = (), image_size: int | None = None) -> AugmentConfig:
    """The recommended policy: every view augmentation at the strongest strength its curve calls safe.

    Args:
        curves: :class:`~ssl_viz.analysis.diagnosis.DoseCurve` values (their ``safe_up_to`` decide).
        thresholds: augmentations that do (almost) nothing to these images (image change below
            ``thresholds.min_change`` even at the strongest dose) are left out.
        base: the policy to start from (default: the identity ``none``); augmentations without a curve keep its values.
        extras: augmentations outside :data:`VIEW_AUGMENTATIONS` to include as well (``rotation``, ``jigsaw``, ``cutout``).
        image_size: the images' smaller side in pixels; blur is included only from :data:`MIN_BLUR_SIZE` (None: left out),
            and up to :data:`SMALL_IMAGE_SIZE` a crop that is harmful at some strength keeps at least
            :data:`SMALL_IMAGE_CROP_FLOOR` of the area (None: no floor).

    Returns an :class:`~ssl_viz.config.AugmentConfig`; write it as a spec with
    :func:`~ssl_viz.augment.policy_to_spec`. Magnitudes: crop ``(area at safe_up_to, 1)``, free
    rotation up to the safe angle (crop area floored for small images, see above), jitter strength = safe strength, blur sigma ``(0.1, safe sigma)``,
    solarize threshold of the safe strength, jigsaw grid, cutout area ``(0.02, safe area)``.
    Probability-type ones (flip, grayscale, rotate90) only when safe at probability 1. Values are
    rounded to 3 decimals.
    """
    wanted = set(VIEW_AUGMENTATIONS) | set(extras)
    if image_size is None or image_size < MIN_BLUR_SIZE:
        wanted.discard("blur")
    cfg = base or POLICIES["none"]
    small = image_size is not None and image_size <= SMALL_IMAGE_SIZE
    for c in curves:
        s = c.safe_up_to
        if c.name not in wanted or s is None or max(c.image_change) < thresholds.min_change:
            continue
        p = RECOMMENDED_P.get(c.name, 1.0)
        if c.kind == "probability":
            if s >= 1.0:
                cfg = replace(cfg, **{"grayscale": {"grayscale_p": p}, "flip": {"flip_p": p}, "rotate90": {"rotate90_p": p}}[c.name])
            continue
        one = dose_transform(c.name, s)
        crop_floor = SMALL_IMAGE_CROP_FLOOR if small and c.harmful_from is not None else 0.0
        changes = {
            "crop": dict(crop_scale=(_r(max(one.crop_scale[0], crop_floor)), 1.0)),
            "rotation": dict(rotation_degrees=_r(one.rotation_degrees)),
            "color_jitter": dict(jitter_p=p, jitter_strength=_r(one.jitter_strength)),
            "blur": dict(blur_p=p, blur_sigma=(min(0.1, _r(one.blur_sigma[1])), _r(one.blur_sigma[1]))),
            "solarize": dict(solarize_p=p, solarize_threshold=_r(one.solarize_threshold)),
            "jigsaw": dict(jigsaw_grid=one.jigsaw_grid, jigsaw_p=p),
            "cutout": dict(cutout_p=p, cutout_scale=(min(0.02, _r(one.cutout_scale[1])), _r(one.cutout_scale[1]))),
        }[c.name]
        cfg = replace(cfg, **changes)
    return cfg
