"""scikit-image's sample photographs: a handful of natural images for looking at, not for training.

Only photographs shipped inside the scikit-image wheel are used (no pooch
download, so this works offline); any that fail to load are skipped. Each is
centre-cropped to a square and resized to ``size`` x ``size`` RGB (grayscale
photos get three equal channels).

Labels: none (all ``-1``, ``class_names == []``): each photo is its own
instance, so class-based evaluation does not apply. The photo names are the
factor ``photo``, so ``load_dataset("photos", label="photo")`` labels each
image by its name. ``train`` and ``test`` both return the full set.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

from ssl_viz.data.base import DatasetError, ImageDataset

# Bundled with scikit-image (no download needed); order is the dataset order.
PHOTO_NAMES = [
    "astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "moon", "clock",
    "hubble_deep_field", "immunohistochemistry", "retina", "page", "text", "brick", "grass", "gravel",
]


def available_photos() -> dict[str, np.ndarray]:
    """The photos that load on this machine, name -> uint8 array ``[H, W]`` or ``[H, W, 3|4]``."""
    from skimage import data

    photos = {}
    for name in PHOTO_NAMES:
        try:
            photos[name] = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - missing file, optional dependency or download needed: skip it
            continue
    return photos


@functools.lru_cache(maxsize=2)
def _resized(size: int) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and uint8 ``[N, 3, size, size]`` (cached: both splits share one decode; full-size photos are freed)."""
    photos = available_photos()
    if not photos:
        raise DatasetError("photos: no scikit-image sample photographs could be loaded (is scikit-image installed?)")
    images = np.stack([to_square_rgb(array, size) for array in photos.values()])
    images.setflags(write=False)
    return tuple(photos), images


def to_square_rgb(array: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize: uint8 ``[H, W(, C)]`` -> uint8 ``[3, size, size]``."""
    if array.dtype != np.uint8:
        array = np.clip(array.astype(np.float64) * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(array).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image).transpose(2, 0, 1).copy()


def load(split: str = "train", size: int = 128) -> ImageDataset:
    """All available sample photos as uint8 ``[N, 3, size, size]``, unlabelled (both splits are the full set)."""
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    if not 8 <= int(size) <= 1024:
        raise DatasetError(f"photos: size must be between 8 and 1024, got {size}")
    names, images = _resized(int(size))
    return ImageDataset(
        name="photos",
        split=split,
        images=torch.from_numpy(images.copy()),
        labels=torch.full((len(names),), -1, dtype=torch.long),
        class_names=[],
        factors={"photo": np.arange(len(names), dtype=np.int64)},
        factor_names={"photo": list(names)},
        label_factor=None,
    )
