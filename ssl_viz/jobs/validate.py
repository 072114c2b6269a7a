"""Fail early, with one line, on a TrainConfig that cannot be trained as given (before a run directory is made)."""

from __future__ import annotations

import dataclasses
import math

from ssl_viz.config import TrainConfig

_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),),
          "tuple[float, float]": (tuple, list)}


class ConfigError(ValueError):
    """A TrainConfig cannot be trained as given; the message says why in one line."""


def check_types(cfg, prefix: str = "") -> None:
    """Each field of the config dataclass ``cfg`` (nested ones too) holds a value of its annotated type
    (an int counts as a float; a nested config may be None). Raises :class:`ConfigError` naming the first that does not."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_types(value, f"{prefix}{f.name}.")
            continue
        names = [n.strip() for n in str(f.type).split("|")]
        allowed = tuple(t for n in names for t in _TYPES.get(n, (type(None),)))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ConfigError(f"{prefix}{f.name} must be {f.type}, got {value!r}")


def validate_config(cfg: TrainConfig) -> None:
    """Check the types of ``cfg``'s fields, the names of its method, encoder and dataset, its batch size and its policy.

    Folders (``folder:PATH``, ``cifar10:PATH``, ...) are checked when they are loaded. Raises :class:`ConfigError`.
    """
    from ssl_viz.augment import parse_policy
    from ssl_viz.data import DATASETS, PATH_NAMES
    from ssl_viz.encoders import ENCODERS
    from ssl_viz.methods import METHODS

    check_types(cfg)
    if cfg.method not in METHODS:
        raise ConfigError(f"unknown method {cfg.method!r}; choose one of: {', '.join(METHODS)}")
    if cfg.encoder not in ENCODERS:
        raise ConfigError(f"unknown encoder {cfg.encoder!r}; choose one of: {', '.join(ENCODERS)}")
    key, colon, _ = cfg.dataset.partition(":")
    if not (colon and key in PATH_NAMES) and cfg.dataset not in DATASETS:  # folders (NAME:PATH) are checked on load
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(DATASETS)} (folder:PATH, cifar10:PATH, ...)")
    if not (isinstance(cfg.knn_every_s, (int, float)) and math.isfinite(cfg.knn_every_s) and cfg.knn_every_s >= 0):
        raise ConfigError(f"--knn-every-s must be a number of seconds, 0 or more, got {cfg.knn_every_s}")
    if cfg.image_size is not None and not 8 <= cfg.image_size <= 1024:
        raise ConfigError(f"--image-size must be between 8 and 1024 px, got {cfg.image_size}")
    if cfg.small_crops < 0 or (cfg.small_crops and not METHODS[cfg.method].supports_small_crops):
        raise ConfigError(f"--small-crops must be 0 or more, and more than 0 only with simclr or swav, got {cfg.small_crops} "
                          f"with {cfg.method}")
    if cfg.small_crop_size is not None and not 4 <= cfg.small_crop_size <= 1024:
        raise ConfigError(f"--small-crop-size must be between 4 and 1024 px, got {cfg.small_crop_size}")
    lo_hi = tuple(cfg.small_crop_scale)
    if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) for v in lo_hi) or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
        raise ConfigError(f"--small-crop-scale needs 0 < LO <= HI <= 1, got {cfg.small_crop_scale}")
    scale = cfg.method_cfg.predictor_lr_scale
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"--predictor-lr-scale must be a positive number, got {scale}")
    if cfg.batch_size < 2:
        raise ConfigError("--batch-size must be at least 2 (contrastive losses need negatives)")
    try:
        parse_policy(cfg.augment)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
