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

Modules: :mod:`~ssl_viz.augment.policy` (presets, spec strings, checks, UI text),
:mod:`~ssl_viz.augment.sampling` (per-sample random parameters),
:mod:`~ssl_viz.augment.kernels` (batched colour, blur, jigsaw, cutout, solarize),
:mod:`~ssl_viz.augment.geometry` (crop, flip and rotations as one affine resample),
:mod:`~ssl_viz.augment.pipeline` (:class:`BatchAugment`, :class:`MultiViewAugment`),
:mod:`~ssl_viz.augment.torchvision_twin` (:func:`v2_transform`) and
:mod:`~ssl_viz.augment.knobs` (the Train page's on/off + strength knobs).
"""

from __future__ import annotations

from ssl_viz.augment.geometry import affine_grid, affine_theta
from ssl_viz.augment.kernels import (
    apply_jigsaw,
    blur_kernel_size,
    color_jitter,
    colorization_view,
    cutout,
    gaussian_blur,
    jigsaw,
    solarize,
    to_grayscale,
)
from ssl_viz.augment.knobs import AUGMENT_KNOBS, knobs_from_policy, policy_from_knobs
from ssl_viz.augment.pipeline import BatchAugment, MultiViewAugment, describe_params
from ssl_viz.augment.policy import (
    POLICIES,
    PROBABILITY_TRANSFORMS,
    SINGLE_TRANSFORMS,
    describe_policy,
    dose_kind,
    dose_transform,
    parse_policy,
    policy_to_spec,
    single_transform,
    validate_policy,
)
from ssl_viz.augment.torchvision_twin import Jigsaw, RandomRot90, v2_transform

__all__ = [
    "AUGMENT_KNOBS", "POLICIES", "PROBABILITY_TRANSFORMS", "SINGLE_TRANSFORMS", "BatchAugment", "Jigsaw", "MultiViewAugment", "RandomRot90",
    "affine_grid", "affine_theta", "apply_jigsaw", "blur_kernel_size", "color_jitter", "colorization_view", "cutout",
    "describe_params", "describe_policy", "dose_kind", "dose_transform", "gaussian_blur", "jigsaw", "knobs_from_policy", "parse_policy",
    "policy_from_knobs", "policy_to_spec", "single_transform", "solarize", "to_grayscale", "v2_transform",
    "validate_policy",
]
