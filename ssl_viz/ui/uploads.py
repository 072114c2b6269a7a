"""Uploaded images on a page: the file picker, and a decoded tensor or one clear message (never a traceback)."""

from __future__ import annotations

import streamlit as st
import torch
from PIL import UnidentifiedImageError

from ssl_viz.analysis.retrieval import read_query_image

IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "webp", "gif", "tif", "tiff"]


def unreadable(name: str, exc: Exception) -> str:
    """One sentence for an upload that does not decode (never the upload object's repr)."""
    if isinstance(exc, UnidentifiedImageError) or isinstance(exc.__cause__, UnidentifiedImageError) or "cannot identify image" in str(exc):
        return f"{name} is not an image this app can read (PNG, JPEG, BMP, WebP, GIF or TIFF)."
    return f"Cannot read {name} as an image: {str(exc).split(' UploadedFile(')[0]}"


def uploaded_image(label: str, key: str, channels: int, size: tuple[int, int]) -> torch.Tensor | None:
    """A file picker for one image, decoded like a dataset image (uint8 ``[1, channels, H, W]``), or None.

    None without a file; a file that is not a readable image gets one ``st.error`` naming it and None
    (the rest of the page still runs).
    """
    upload = st.file_uploader(label, type=IMAGE_TYPES, key=key)
    if upload is None:
        return None
    try:
        return read_query_image(upload, channels, size)
    except Exception as exc:  # any decoder failure is the upload's fault: say so, do not take the page down
        st.error(unreadable(upload.name, exc))
        return None


def uploaded_query_or_stop(label: str, key: str, hint: str, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """A file picker for one query image, decoded like a dataset image: uint8 ``[1, channels, H, W]``.

    The pixels are those the same file gets inside a folder dataset (:mod:`ssl_viz.data.decode`: EXIF
    orientation, 16-bit scaling, transparency over white, short side resized and centre-cropped).

    Without a file the page shows ``hint`` (``st.info``) and stops; a file that is not a readable
    image (junk, a decompression bomb) ends it with one ``st.error`` naming the file.
    """
    upload = st.file_uploader(label, type=IMAGE_TYPES, key=key)
    if upload is None:
        st.info(hint)
        st.stop()
    try:
        return read_query_image(upload, channels, size)
    except Exception as exc:  # any decoder failure is the upload's fault: say so, do not take the page down
        st.error(unreadable(upload.name, exc))
        st.stop()
