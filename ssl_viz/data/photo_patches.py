"""Colour patches of scikit-image's sample photographs: natural colour statistics to train a first layer on, offline.

Each image is a square crop of one of the colour photographs shipped inside the scikit-image wheel (astronaut,
chelsea, coffee, rocket, hubble_deep_field, immunohistochemistry, retina; those that load), its side drawn
uniformly between 8 % and 40 % of the photograph's shorter side, at a uniform position, resized to ``size`` x
``size`` RGB; a patch is flipped left-right with probability 0.5. Seeded (``seed``, and the split), so every
machine builds the same images in a second or two. Label: the photograph the patch was cut from (the factor
``photo``), so kNN accuracy asks whether a representation tells the photographs' colours and textures apart.

This is what the zoo's colour model trains on (``models/simclr-k7-photo-patches``): natural image patches are
where first-layer filters become oriented edges and colour blobs (Olshausen & Field 1996; the first layers of
ImageNet networks, Krizhevsky et al. 2012, fig. 3), which the Kernels page sets out to show.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

from ssl_viz.data.base import DatasetError, ImageDataset

COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
SPLIT_SIZES = {"train": 20_000, "test": 4_000}
SIDE_RANGE = (0.08, 0.40)   # crop side, as a fraction of the photograph's shorter side


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[tuple[str, ...], tuple[Image.Image, ...]]:
    from skimage import data

    names, images = [], []
    for name in COLOUR_PHOTOS:
        try:
            array = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - not in this wheel or needs a download: skip it
            continue
        if array.ndim == 3 and array.shape[2] >= 3:
            names.append(name)
            images.append(Image.fromarray(array[..., :3].astype(np.uint8)))
    if len(names) < 2:
        raise DatasetError("photo-patches: fewer than two colour sample photographs load (is scikit-image installed?)")
    return tuple(names), tuple(images)


@functools.lru_cache(maxsize=4)
def _patches(split: str, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[N, 3, size, size]`` and labels ``[N]`` of one split (cached per process)."""
    names, photos = _photos()
    n = SPLIT_SIZES[split]
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    labels = np.arange(n) % len(names)
    rng.shuffle(labels)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i, c in enumerate(labels):
        photo = photos[c]
        short = min(photo.size)
        side = max(4, int(short * rng.uniform(*SIDE_RANGE)))
        x, y = int(rng.integers(0, photo.size[0] - side + 1)), int(rng.integers(0, photo.size[1] - side + 1))
        patch = photo.resize((size, size), Image.Resampling.BILINEAR, box=(x, y, x + side, y + side), reducing_gap=2.0)
        if rng.random() < 0.5:
            patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(patch).transpose(2, 0, 1)
    out.setflags(write=False)
    return out, labels.astype(np.int64)


def load(split: str = "train", size: int = 32, seed: int = 0) -> ImageDataset:
    """``SPLIT_SIZES[split]`` colour patches as uint8 ``[N, 3, size, size]``, labelled by their photograph.

    Raises:
        DatasetError: an unknown split, a size outside 8..256, or fewer than two colour photographs available.
    """
    if split not in SPLIT_SIZES:
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    if not 8 <= int(size) <= 256:
        raise DatasetError(f"photo-patches: size must be between 8 and 256, got {size}")
    names, _ = _photos()
    images, labels = _patches(split, int(size), int(seed))
    return ImageDataset(
        name="photo-patches",
        split=split,
        images=torch.from_numpy(images.copy()),
        labels=torch.from_numpy(labels),
        class_names=list(names),
        factors={"photo": labels.copy()},
        factor_names={"photo": list(names)},
        label_factor="photo",
    )
