"""One decoding path for every image file the product reads: folder datasets, uploaded zips (unpacked
into a folder), and single images uploaded on a page (Retrieval and Feature maps queries).

:func:`decode_image` turns a file into dataset pixels, in this order:

1. open with PIL, refusing images over ``max_pixels`` (a decompression-bomb guard, below PIL's own);
2. JPEG files are decoded at a reduced scale that is still at least the output size (``draft``);
3. the EXIF orientation is applied (``ImageOps.exif_transpose``: a phone photo stands upright);
4. :func:`to_mode`: 16-bit and 32-bit integer and float grayscale are scaled to 8 bits (never clipped
   to white), transparent pixels are composited over **white**, palette / CMYK / LA / 1-bit / YCbCr
   images are converted, and the result is ``"L"`` (1 channel) or ``"RGB"`` (3 channels);
5. ``ImageOps.fit``: the short side is resized (bicubic) and the centre cropped to ``(H, W)``.

The same file therefore gives the same pixels whether it sits in a dataset folder or is uploaded.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 64_000_000  # per image, below PIL's own 89M warning: larger files are refused as possible bombs
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class ImageDecodeError(ValueError):
    """A file is not a readable image (junk, truncated, too many pixels); the message says why."""


def _as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int | np.integer) else (int(size[0]), int(size[1]))


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """One grayscale band of more than 8 bits as uint8.

    ``I;16*`` (16-bit, e.g. a 16-bit PNG): ``round(v * 255 / 65535)``, the full 16-bit range onto 0-255.
    ``I`` (32-bit integer): values in 0-255 are kept, in 0-65535 scaled as 16-bit, otherwise min-max scaled.
    ``F`` (float): values in [0, 1] are scaled by 255, in [0, 255] kept, otherwise min-max scaled; NaN is 0.
    """
    a = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        scale, offset = 255.0 / 65535.0, 0.0
    elif mode == "F" and lo >= 0.0 and hi <= 1.0:
        scale, offset = 255.0, 0.0
    elif lo >= 0.0 and hi <= 255.0:
        scale, offset = 1.0, 0.0
    elif mode == "I" and lo >= 0.0 and hi <= 65535.0:
        scale, offset = 255.0 / 65535.0, 0.0
    else:  # outside every known range: stretch what is there onto 0-255
        scale, offset = (255.0 / (hi - lo) if hi > lo else 0.0), lo
    return np.clip((a - offset) * scale + 0.5, 0, 255).astype(np.uint8)


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Any PIL image as ``mode`` ("L" or "RGB"): high bit depths scaled to 8 bits, transparency over white.

    Raises ValueError (PIL's) for a mode PIL cannot convert (e.g. LAB).
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = Image.fromarray(_to_uint8(np.asarray(img), img.mode), "L")
    elif img.mode in ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if img.mode == mode:
        return img
    try:
        return img.convert(mode)
    except ValueError:  # no direct conversion (e.g. CMYK -> L): through RGB
        return img.convert("RGB").convert(mode)


def open_image(file, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``Image.open(file)`` (a path or a binary file object) with the pixel-count guard; lazy, nothing decoded yet.

    Raises :class:`ImageDecodeError` when PIL cannot identify the file or it has too many or no pixels.
    """
    try:
        img = Image.open(file)
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(f"too many pixels (decompression bomb guard): {err}") from err
    except Exception as err:  # noqa: BLE001 - malformed files make PIL raise almost anything
        raise ImageDecodeError(f"cannot open as an image: {type(err).__name__}: {err}") from err
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ImageDecodeError(f"too many pixels: {width}x{height} > max_pixels={max_pixels} (decompression bomb guard)")
    if width < 1 or height < 1:
        img.close()
        raise ImageDecodeError(f"empty image {width}x{height}")
    return img


def prepare_image(img: Image.Image, size: int | tuple[int, int], mode: str) -> np.ndarray:
    """Steps 2-5 of the module docstring on an opened PIL image: uint8 ``[C, H, W]`` (C = 1 for "L", 3 for "RGB").

    Raises whatever PIL raises for a broken or unconvertible image (:func:`decode_image` words it).
    """
    h, w = _as_hw(size)
    if img.format == "JPEG":
        img.draft(mode, (max(h, w), max(h, w)))  # decode at a reduced scale still >= the output (a no-op once loaded)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the image
        pass
    array = np.asarray(ImageOps.fit(to_mode(img, mode), (w, h), Image.Resampling.BICUBIC))
    return array[None].copy() if array.ndim == 2 else array.transpose(2, 0, 1).copy()


def decode_image(file, size: int | tuple[int, int], mode: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file as dataset pixels: uint8 ``[C, H, W]``, C = 1 for ``mode="L"``, 3 for ``"RGB"``.

    Args:
        file: a path or a binary file object (e.g. a Streamlit upload).
        size: ``(H, W)`` of the output, or one int for a square.
        mode: "L" or "RGB" (a dataset's channels: 1 or 3).
        max_pixels: larger images are refused (decompression-bomb guard).

    Raises :class:`ImageDecodeError` (a ValueError) with the decoder's own words when the file cannot be
    read (junk bytes, a truncated file, an unconvertible mode, too many pixels).
    """
    with open_image(file, max_pixels) as img:
        try:
            return prepare_image(img, size, mode)
        except Exception as err:  # noqa: BLE001 - truncated data, unsupported modes, ...: the file's fault
            raise ImageDecodeError(f"cannot decode: {type(err).__name__}: {err}") from err


def channels_mode(channels: int) -> str:
    """The PIL mode of a dataset with ``channels`` channels: 1 -> "L", 3 -> "RGB"."""
    if channels not in (1, 3):
        raise ValueError(f"images have 1 or 3 channels, not {channels}")
    return "L" if channels == 1 else "RGB"
