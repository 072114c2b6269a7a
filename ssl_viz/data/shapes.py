"""Coloured shapes: the case where colour augmentation (jitter, grayscale) is a *bad* idea for one label.

dSprites-like 32x32 RGB images: one shape on a dark, slightly noisy grey
background, with six factors drawn independently (each balanced):

* ``shape``: circle, square, triangle, cross;
* ``colour``: red, green, blue, yellow, chosen *isoluminant* (equal Rec.601
  luma, the weights torchvision's ``rgb_to_grayscale`` uses) so that after
  grayscale conversion the colours are nearly indistinguishable; a per-image
  brightness jitter (±8%), equal for every colour, hides what rounding leaves;
* ``orientation``: 0, 22.5, 45, 67.5 degrees counter-clockwise;
* ``size``: small, medium, large (circumradius 5, 7, 9 px);
* ``position``: the quadrant of the centre (with sub-pixel jitter);
* ``brightness``: dark, mid, bright: the luma of the shape's colour (0.3, 0.45, 0.62;
  the four colours stay isoluminant within a level), the label that colour jitter
  (its brightness and contrast part) destroys.

Default labels are ``shape``; ``load_dataset("shapes", label="color")``
labels by colour. Train and test use different random streams (and the
continuous jitter makes exact duplicates practically impossible).
"""

from __future__ import annotations

import numpy as np
import torch

from ssl_viz.data.base import DatasetError, ImageDataset

SIZE = 32
SUPERSAMPLE = 2  # render at 2x and average 2x2 blocks: anti-aliased edges
LUMA = np.array([0.2989, 0.587, 0.114])
SHAPES = ["circle", "square", "triangle", "cross"]
COLOR_NAMES = ["red", "green", "blue", "yellow"]
ORIENTATIONS = [0.0, 22.5, 45.0, 67.5]
SIZES = {"small": 5.0, "medium": 7.0, "large": 9.0}
POSITIONS = {"top-left": (10.0, 10.0), "top-right": (10.0, 22.0), "bottom-left": (22.0, 10.0), "bottom-right": (22.0, 22.0)}
TARGET_LUMA = 0.45
BRIGHTNESS = {"dark": 0.3, "mid": TARGET_LUMA, "bright": 0.62}     # luma of the shape's colour
BACKGROUND = (0.03, 0.21)                                            # luma range of the background (uniform per image)
NOISE = (0.005, 0.03)                                                # std of the background's pixel noise (uniform per image)
LUMA_JITTER = 0.08                                                   # per-image factor 1 +- this, the same for every colour


def isoluminant(hue_rgb: tuple[float, float, float], luma: float = TARGET_LUMA, saturation: float = 0.85) -> np.ndarray:
    """An RGB colour ``[3]`` in [0, 1] in the direction of ``hue_rgb`` with luma exactly ``luma``.

    ``colour = luma + a * (hue - luma(hue))``: the added vector has zero luma, and ``a`` is
    ``saturation`` times the largest value that keeps every channel inside [0, 1].
    """
    hue = np.asarray(hue_rgb, dtype=np.float64)
    direction = hue - LUMA @ hue
    with np.errstate(divide="ignore"):
        limits = np.where(direction > 0, (1.0 - luma) / direction, np.where(direction < 0, -luma / direction, np.inf))
    return luma + saturation * limits.min() * direction


HUES = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)]
COLORS = np.stack([isoluminant(h) for h in HUES])                                               # [4, 3] at the mid level
LEVEL_COLORS = np.stack([[isoluminant(h, luma) for h in HUES] for luma in BRIGHTNESS.values()])  # [3 levels, 4 colours, 3]


def shape_masks(shape: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean masks ``[N, H, W]``: is point (x, y), in shape-normalised coordinates, inside shape ``shape[i]``?

    Coordinates are already rotated and divided by the circumradius (so every shape fits the unit disc).
    """
    inside = np.zeros(x.shape, dtype=bool)
    for s, name in enumerate(SHAPES):
        i = np.flatnonzero(shape == s)
        xs, ys = x[i], y[i]
        if name == "circle":
            inside[i] = xs**2 + ys**2 <= 0.85**2  # area close to the square's
        elif name == "square":
            inside[i] = np.maximum(np.abs(xs), np.abs(ys)) <= 0.72
        elif name == "triangle":  # equilateral, apex up, circumradius 1: three half-planes at distance 0.5
            normals = np.deg2rad([-90.0, 30.0, 150.0])
            inside[i] = np.all([xs * np.cos(a) + ys * np.sin(a) <= 0.5 for a in normals], axis=0)
        elif name == "cross":
            ax, ay = np.abs(xs), np.abs(ys)
            inside[i] = ((ax <= 0.28) & (ay <= 0.95)) | ((ay <= 0.28) & (ax <= 0.95))
    return inside


def balanced(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices ``[n]`` in ``0..k-1``, each (nearly) equally often, in random order."""
    return rng.permutation(np.arange(n) % k)


def coverage(shape: np.ndarray, centres: np.ndarray, theta: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Anti-aliased shape coverage in [0, 1], float32 ``[N, 32, 32]``.

    Args:
        shape: ``[N]`` shape indices; centres: ``[N, 2]`` (row, col) in pixels;
        theta: ``[N]`` counter-clockwise rotation in radians; radius: ``[N]`` circumradius in pixels.
    """
    grid = ((np.arange(SIZE * SUPERSAMPLE) + 0.5) / SUPERSAMPLE).astype(np.float32)  # sample centres, pixel units
    x = grid[None, None, :] - centres[:, 1, None, None].astype(np.float32)  # x right
    y = centres[:, 0, None, None].astype(np.float32) - grid[None, :, None]  # y up
    cos, sin = np.cos(theta)[:, None, None].astype(np.float32), np.sin(theta)[:, None, None].astype(np.float32)
    r = radius[:, None, None].astype(np.float32)
    xr, yr = (cos * x + sin * y) / r, (cos * y - sin * x) / r  # rotate the plane by -theta: the shape turns by +theta
    mask = shape_masks(shape, xr, yr).view(np.uint8)
    k = SUPERSAMPLE
    hits = sum(mask[:, i::k, j::k] for i in range(k) for j in range(k))  # [N, 32, 32] count per output pixel
    return hits.astype(np.float32) * np.float32(1.0 / (k * k))


def render(factors: dict[str, np.ndarray], rng: np.random.Generator, chunk: int = 1024) -> np.ndarray:
    """Images uint8 ``[N, 3, 32, 32]`` for factor indices (each ``[N]``) ``shape, color, orientation, size, position``
    and ``brightness`` (the mid level when absent)."""
    n = len(factors["shape"])
    centres = np.asarray(list(POSITIONS.values()))[factors["position"]] + rng.uniform(-1.5, 1.5, (n, 2))
    theta = np.deg2rad(np.asarray(ORIENTATIONS)[factors["orientation"]])
    radius = np.asarray(list(SIZES.values()))[factors["size"]]
    level = factors.get("brightness", np.full(n, list(BRIGHTNESS).index("mid")))
    jitter = rng.uniform(1 - LUMA_JITTER, 1 + LUMA_JITTER, (n, 1))                            # same jitter for every hue
    color = (LEVEL_COLORS[level, factors["color"]] * jitter).astype(np.float32)
    noise = rng.uniform(*NOISE, (n, 1, 1, 1)) * rng.standard_normal((n, 1, SIZE, SIZE))
    background = (rng.uniform(*BACKGROUND, (n, 1, 1, 1)) + noise).astype(np.float32)
    out = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    for start in range(0, n, chunk):  # bounded memory: the 2x supersampled grids are [chunk, 64, 64]
        sl = slice(start, start + chunk)
        cover = coverage(factors["shape"][sl], centres[sl], theta[sl], radius[sl])[:, None]  # [c, 1, 32, 32]
        image = background[sl] * (1.0 - cover) + color[sl, :, None, None] * cover
        out[sl] = np.clip(image * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    return out


def generate(n: int, split: str, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` images uint8 ``[n, 3, 32, 32]`` and their factor indices (each int64 ``[n]``)."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    counts = {"shape": SHAPES, "color": COLOR_NAMES, "orientation": ORIENTATIONS, "size": SIZES, "position": POSITIONS,
              "brightness": BRIGHTNESS}
    factors = {name: balanced(n, len(values), rng).astype(np.int64) for name, values in counts.items()}
    return render(factors, rng), factors


def load(split: str = "train", n: int | None = None, seed: int = 0) -> ImageDataset:
    """Shapes ``[n, 3, 32, 32]`` labelled by shape (n defaults to 3000 train / 1000 test)."""
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    n = (3000 if split == "train" else 1000) if n is None else int(n)
    if n < 1:
        raise DatasetError(f"shapes: n must be >= 1, got {n}")
    images, factors = generate(n, split, seed)
    names = {
        "shape": list(SHAPES),
        "color": list(COLOR_NAMES),
        "orientation": [f"{a:g}°" for a in ORIENTATIONS],
        "size": list(SIZES),
        "position": list(POSITIONS),
        "brightness": list(BRIGHTNESS),
    }
    return ImageDataset(
        name="shapes",
        split=split,
        images=torch.from_numpy(images),
        labels=torch.from_numpy(factors["shape"].copy()),
        class_names=names["shape"],
        factors=factors,
        factor_names=names,
        label_factor="shape",
    )
