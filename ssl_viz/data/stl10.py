"""STL-10 (Coates et al. 2011) in its binary layout (``stl10_binary``): 96x96 colour, 10 classes.

Names (PATH is ``stl10_binary``, under any name, or a folder holding it):

* ``stl10`` / ``stl10:PATH``: the labelled sets, train 5,000 / test 8,000 images, labels 0..9.
* ``stl10-unlabeled`` / ``stl10-unlabeled:PATH``: for self-supervised training. Its **train** split is the
  100,000 unlabelled images (``unlabeled_X.bin``, labels ``-1``, ``class_names == []``); its **test** split is
  the labelled test set, so a run's encoder can still be embedded and evaluated on labelled images.

Class names are read from ``class_names.txt`` (the published ten when the file is absent).

Why not torchvision's :class:`~torchvision.datasets.STL10`: it reads each file whole into memory
(``np.fromfile``: 2.7 GB for the unlabelled set) and md5-checks all five files (2.6 GB) on every load,
even for the 5,000 training images. Here each ``*_X.bin`` is **memory-mapped** with numpy (copy-on-write:
the file is never written, pages are read when images are indexed) and handed on as a strided
``torch.from_numpy`` view, so loading costs no memory and no time whatever the size. The format is raw
bytes (no pickle), so reading a file that is not the published one is safe; it is checked by size instead
(a whole number of images, one label byte per image, labels 1..10). The files store each image's 96x96
planes **column-major** (Fortran order, as MATLAB wrote them): the view transposes each plane, as
torchvision's reader does. Nothing is downloaded unless asked (``download_if_missing=True`` with no PATH):
the archive is 2.6 GB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ssl_viz.data.base import DatasetError, ImageDataset
from ssl_viz.data.standard import default_roots, locate, try_download
from ssl_viz.paths import cache_dir

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
BASE_FOLDER = "stl10_binary"
# stored split -> (images file, labels file or None)
FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"), "unlabeled": ("unlabeled_X.bin", None)}
CLASS_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
CLASS_FILE = "class_names.txt"
DOWNLOAD_HOST = "ai.stanford.edu"


def read_images(path: Path) -> np.ndarray:
    """The images of an STL-10 ``*_X.bin`` file as a memory-mapped uint8 view ``[N, 3, 96, 96]`` (C, H, W).

    No byte is read here: the array maps the file copy-on-write (never written back) and its last two
    axes are swapped, since the file stores each plane column-major. Raises DatasetError when the
    file is empty or not a whole number of 3 x 96 x 96 images.
    """
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise DatasetError(f"{path} is not an STL-10 image file: its {size} bytes are not a whole number of "
                           f"3x96x96 images ({IMAGE_BYTES} bytes each; truncated?)")
    mapped = np.memmap(path, dtype=np.uint8, mode="c", shape=(size // IMAGE_BYTES, 3, SIDE, SIDE))
    return mapped.transpose(0, 1, 3, 2)  # [N, C, W, H] as stored -> [N, C, H, W]


def read_labels(path: Path, n: int, n_classes: int) -> np.ndarray:
    """Labels of an STL-10 ``*_y.bin`` file (one byte per image, 1-based) as int64 ``[n]`` in 0..n_classes-1.

    Raises DatasetError when the count differs from the images' or a label is outside 1..n_classes.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    if len(raw) != n:
        raise DatasetError(f"{path} holds {len(raw)} labels for {n} images; expected one byte per image")
    if n and (raw.min() < 1 or raw.max() > n_classes):
        raise DatasetError(f"{path}: labels must be 1..{n_classes}, found {int(raw.min())}..{int(raw.max())}")
    return raw.astype(np.int64) - 1


def class_names(folder: Path) -> list[str]:
    """The names in ``class_names.txt`` (one per line), or the published ten when the file is absent."""
    file = folder / CLASS_FILE
    if not file.is_file():
        return list(CLASS_NAMES)
    names = [line.strip() for line in file.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return names or list(CLASS_NAMES)


def load(split: str = "train", path: str | Path | None = None, unlabeled: bool = False,
         download_if_missing: bool = False) -> ImageDataset:
    """STL-10 ``split`` as a memory-mapped uint8 ``[N, 3, 96, 96]`` dataset.

    Args:
        split: ``"train"`` (5,000 labelled images; with ``unlabeled`` the 100,000 unlabelled ones) or ``"test"`` (8,000).
        path: the ``stl10_binary`` folder or one holding it; None looks in the default places.
        unlabeled: the ``stl10-unlabeled`` name: train on ``unlabeled_X.bin`` (labels ``-1``).
        download_if_missing: with no ``path``, let torchvision download the 2.6 GB archive into the cache
            when the network answers (off by default).

    Raises:
        DatasetError: a bad split, a folder lacking the split's files (they are named), or files of the wrong size.
    """
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    name = "stl10-unlabeled" if unlabeled else "stl10"
    stored = "unlabeled" if unlabeled and split == "train" else split
    images_file, labels_file = FILES[stored]
    needed = [images_file] + ([labels_file] if labels_file else [])
    folder = locate(name, path, BASE_FOLDER, needed)
    if folder is None and download_if_missing:
        from torchvision.datasets import STL10

        root = cache_dir().expanduser()
        if try_download(DOWNLOAD_HOST, lambda: STL10(str(root), split="test", download=True), port=80):
            folder = locate(name, None, BASE_FOLDER, needed)
    if folder is None:
        raise DatasetError(f"STL-10 not found: put its {BASE_FOLDER} folder ({', '.join(needed)}) in one of "
                           f"{', '.join(str(r) for r in default_roots())}, or name it as {name}:PATH")
    images = read_images(folder / images_file)
    names = class_names(folder)
    if labels_file:
        labels = read_labels(folder / labels_file, len(images), len(names))
    else:
        labels, names = np.full(len(images), -1, dtype=np.int64), []
    return ImageDataset(
        name=name if path is None else f"{name}:{path}",
        split=split,
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        class_names=names,
    )
