"""Oriented textures: the case where rotation is a *bad* augmentation for one label and a fine one for another.

Every image is a 32x32 grayscale patch with two factors:

* ``source``: ``brick``, ``grass``, ``gravel`` (patches of scikit-image's texture
  photographs), ``streaks`` (anisotropically blurred noise) or ``grating``
  (a noisy sinusoid of random period and phase);
* ``orientation``: the patch is the source rotated counter-clockwise by 0, 45,
  90 or 135 degrees. At 0 the source's dominant lines are horizontal (brick
  mortar rows, streaks, grating stripes); grass and gravel are nearly isotropic,
  so their orientation is true by construction but hard to see.

Default labels are ``orientation``: rotating an image by 90 degrees turns class
0 into 90 and 45 into 135, so a rotation-invariant encoder cannot separate them.
``load_dataset("textures", label="source")`` labels by texture type, which
rotation does not change. Train and test patches come from disjoint pixel
regions of the source images (the top 70% of rows vs the rest) and from
different random streams, so the splits share no pixels.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy import ndimage

from ssl_viz.data.base import DatasetError, ImageDataset

PATCH = 32
SOURCES = ["brick", "grass", "gravel", "streaks", "grating"]
ORIENTATIONS = [0, 45, 90, 135]  # degrees, counter-clockwise; orientation is modulo 180
_TEXTURE_SIDE = 512
_TRAIN_ROWS = 0.7  # train patches come from the top 70% of a source's rows, test patches from the rest
_MARGIN = int(np.ceil(PATCH / 2 * np.sqrt(2))) + 2  # a rotated patch stays inside its region


@functools.lru_cache(maxsize=1)
def source_textures() -> dict[str, np.ndarray]:
    """The photographic and noise sources as float32 ``[H, W]`` in [0, 1], dominant lines horizontal.

    brick is ``[256, 256]`` (downscaled by 2), the others ``[512, 512]``.
    """
    from skimage import data, transform

    textures = {
        # bricks stand upright: turn the rows horizontal, and halve the scale so a patch spans a few rows
        "brick": transform.rescale(np.rot90(data.brick()).astype(np.float32) / 255.0, 0.5, anti_aliasing=True),
        "grass": data.grass().astype(np.float32) / 255.0,
        "gravel": data.gravel().astype(np.float32) / 255.0,
    }
    noise = np.random.default_rng(12345).standard_normal((_TEXTURE_SIDE, _TEXTURE_SIDE)).astype(np.float32)
    streaks = ndimage.gaussian_filter(noise, sigma=(0.8, 6.0), mode="wrap")  # long along x: horizontal streaks
    textures["streaks"] = np.clip(0.5 + 0.18 * streaks / streaks.std(), 0.0, 1.0)
    for key, value in textures.items():
        textures[key] = np.ascontiguousarray(value, dtype=np.float32)
        textures[key].setflags(write=False)  # shared by every caller of this cached function
    return textures


def patch_coordinates(angles_deg: np.ndarray, size: int = PATCH) -> tuple[np.ndarray, np.ndarray]:
    """Source (x, y) offsets, y pointing up, that a patch rotated by ``angles_deg`` samples.

    Args:
        angles_deg: ``[N]`` counter-clockwise rotation of the content.

    Returns:
        ``xs, ys``: each ``[N, size, size]``; output pixel (r, c) shows source point (xs, ys)
        relative to the patch centre.
    """
    half = (size - 1) / 2.0
    u = np.arange(size, dtype=np.float64) - half  # x to the right
    v = half - np.arange(size, dtype=np.float64)  # y up (row 0 is the top)
    theta = np.deg2rad(angles_deg)[:, None, None]
    cos, sin = np.round(np.cos(theta), 12), np.round(np.sin(theta), 12)  # exact at multiples of 90 degrees
    uu, vv = u[None, None, :], v[None, :, None]
    # content rotated by +theta: output point p shows source point R(-theta) p
    return cos * uu + sin * vv, -sin * uu + cos * vv


def sample_patches(texture: np.ndarray, centres: np.ndarray, angles_deg: np.ndarray, size: int = PATCH) -> np.ndarray:
    """Bilinear rotated patches of ``texture`` ``[H, W]``: float ``[N, size, size]``.

    ``centres`` is ``[N, 2]`` as (row, col); ``np.rot90`` of the patch at angle a equals
    the patch at a + 90 for the same centre (the sampling grid maps onto itself).
    """
    xs, ys = patch_coordinates(angles_deg, size)
    rows = centres[:, 0, None, None] - ys
    cols = centres[:, 1, None, None] + xs
    return ndimage.map_coordinates(texture, [rows, cols], order=1, mode="reflect").astype(np.float32)


def gratings(angles_deg: np.ndarray, rng: np.random.Generator, size: int = PATCH) -> np.ndarray:
    """Noisy sinusoidal gratings whose stripes run at ``angles_deg``: float ``[N, size, size]`` in [0, 1].

    Period 4-10 px, random phase, contrast and mean, plus Gaussian pixel noise.
    """
    n = len(angles_deg)
    _, ys = patch_coordinates(angles_deg, size)  # stripes vary along the rotated y
    period = rng.uniform(4.0, 10.0, n)[:, None, None]
    phase = rng.uniform(0.0, 2 * np.pi, n)[:, None, None]
    amplitude = rng.uniform(0.2, 0.4, n)[:, None, None]
    mean = rng.uniform(0.4, 0.6, n)[:, None, None]
    noise = rng.uniform(0.02, 0.12, n)[:, None, None] * rng.standard_normal((n, size, size))
    return np.clip(mean + amplitude * np.sin(2 * np.pi * ys / period + phase) + noise, 0.0, 1.0).astype(np.float32)


def _centres(n: int, split: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Random patch centres ``[n, 2]`` (row, col) inside the split's region of a texture of ``shape``."""
    height, width = shape
    cut = int(_TRAIN_ROWS * height)
    lo, hi = (_MARGIN, cut - _MARGIN) if split == "train" else (cut + _MARGIN, height - _MARGIN)
    rows = rng.uniform(lo, hi, n)
    cols = rng.uniform(_MARGIN, width - _MARGIN, n)
    return np.stack([rows, cols], axis=1)


def balanced_factors(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``source`` and ``orientation`` indices ``[n]``, every combination (nearly) equally often, shuffled."""
    combo = rng.permutation(np.arange(n) % (len(SOURCES) * len(ORIENTATIONS)))
    return combo // len(ORIENTATIONS), combo % len(ORIENTATIONS)


def generate(n: int, split: str, seed: int = 0, jitter: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` patches as uint8 ``[n, 32, 32]`` with their ``source`` and ``orientation`` indices ``[n]``.

    ``jitter`` (degrees) adds a uniform random offset in ``[-jitter, jitter]`` to each angle.
    """
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    source, orientation = balanced_factors(n, rng)
    angles = np.asarray(ORIENTATIONS, dtype=np.float64)[orientation] + rng.uniform(-jitter, jitter, n)
    angles += 180.0 * rng.integers(0, 2, n)  # orientation is modulo 180: both senses occur
    images = np.empty((n, PATCH, PATCH), dtype=np.float32)
    textures = source_textures()
    for s, name in enumerate(SOURCES):
        idx = np.flatnonzero(source == s)
        if name == "grating":
            images[idx] = gratings(angles[idx], rng)
        else:
            texture = textures[name]
            images[idx] = sample_patches(texture, _centres(len(idx), split, texture.shape, rng), angles[idx])
    return np.clip(images * 255.0 + 0.5, 0, 255).astype(np.uint8), source, orientation


def load(split: str = "train", n: int | None = None, seed: int = 0, jitter: float = 0.0) -> ImageDataset:
    """Textures ``[n, 1, 32, 32]`` labelled by orientation (n defaults to 3000 train / 1000 test)."""
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    n = (3000 if split == "train" else 1000) if n is None else int(n)
    if n < 1:
        raise DatasetError(f"textures: n must be >= 1, got {n}")
    images, source, orientation = generate(n, split, seed, jitter)
    orientation_names = [f"{a}°" for a in ORIENTATIONS]
    return ImageDataset(
        name="textures",
        split=split,
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(orientation.astype(np.int64)),
        class_names=orientation_names,
        factors={"source": source.astype(np.int64), "orientation": orientation.astype(np.int64)},
        factor_names={"source": list(SOURCES), "orientation": orientation_names},
        label_factor="orientation",
    )
