"""Datasets by name: one registry, one interface (:class:`ImageDataset`).

>>> ds = load_dataset("digits", split="train")
>>> ds.images.shape   # uint8 [N, 1, 8, 8]

Names: ``digits``, ``fashion-mnist``, ``textures``, ``shapes``, ``photos``,
``folder:PATH`` (an ImageFolder-style directory), and the standard formats where the user has
them: ``cifar10``, ``cifar100``, ``stl10``, ``stl10-unlabeled`` (each also as ``NAME:PATH``).
``label=FACTOR`` relabels a dataset with factors (e.g. ``shapes`` by ``colour``).
"""

from __future__ import annotations

import functools
import importlib
import os

import numpy as np
import torch

from ssl_viz.data.base import DatasetError, ImageDataset, split_indices

# name -> (module, one-line description). Each module exposes
# ``load(split: str, **options) -> ImageDataset``.
DATASETS: dict[str, tuple[str, str]] = {
    "digits": ("ssl_viz.data.digits", "scikit-learn 8x8 handwritten digits (offline, 1797 images)"),
    "fashion-mnist": ("ssl_viz.data.fashion_mnist", "Fashion-MNIST 28x28 clothing, 60k train / 10k test"),
    "textures": ("ssl_viz.data.textures", "brick/grass/gravel patches + oriented gratings; factor orientation"),
    "shapes": ("ssl_viz.data.shapes", "procedural shapes; factors shape, color, orientation, size, position"),
    "photos": ("ssl_viz.data.photos", "scikit-image sample photographs (no labels)"),
    "photo-patches": ("ssl_viz.data.photo_patches", "colour patches of the scikit-image photographs, 32x32, 20k / 4k; label: the photo"),
    "folder": ("ssl_viz.data.folder", "your images: folder:PATH in ImageFolder layout"),
    "cifar10": ("ssl_viz.data.cifar", "CIFAR-10 32x32, 50k train / 10k test (cifar-10-batches-py; cifar10:PATH)"),
    "cifar100": ("ssl_viz.data.cifar", "CIFAR-100 32x32, 100 classes, factor coarse (cifar-100-python; cifar100:PATH)"),
    "stl10": ("ssl_viz.data.stl10", "STL-10 96x96, 5k train / 8k test (stl10_binary; stl10:PATH)"),
    "stl10-unlabeled": ("ssl_viz.data.stl10", "STL-10's 100k unlabelled 96x96 images to train on; test: its 8k labelled"),
}
# Names that take NAME:PATH (the module's ``path`` option) and the fixed options of names sharing a module.
PATH_NAMES = ("folder", "cifar10", "cifar100", "stl10", "stl10-unlabeled")
FIXED_OPTIONS: dict[str, dict] = {"cifar10": {"variant": "cifar10"}, "cifar100": {"variant": "cifar100"},
                                  "stl10-unlabeled": {"unlabeled": True}}

SPLITS = ("train", "test", "all")

__all__ = ["DATASETS", "SPLITS", "DatasetError", "ImageDataset", "check_image_size", "dataset_names", "display_title", "load_dataset",
           "split_indices"]


def dataset_names() -> list[str]:
    """Names offered in pickers (``folder`` needs a path, so it is listed as ``folder:``)."""
    return [n if n != "folder" else "folder:" for n in DATASETS]


def _resolve(name: str) -> tuple[str, dict]:
    key, colon, path = name.partition(":")
    if colon and key in PATH_NAMES:
        if not path:
            raise DatasetError(f"{key}: needs a path, e.g. {key}:/data/my-images")
        return key, {**FIXED_OPTIONS.get(key, {}), "path": path}
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}")
    return name, dict(FIXED_OPTIONS.get(name, {}))


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, split: str, options: tuple) -> ImageDataset:
    key, extra = _resolve(name)
    if split == "all" and key != "folder":  # a built-in set: train then test (once, if both are the same images)
        train, test = _load_cached(name, "train", options), _load_cached(name, "test", options)
        return _concat(train, test)
    module = importlib.import_module(DATASETS[key][0])
    try:
        return module.load(split=split, **extra, **dict(options))
    except TypeError as exc:
        raise DatasetError(f"{name}: bad option ({exc})") from exc


def _concat(train: ImageDataset, test: ImageDataset) -> ImageDataset:
    """``split="all"`` of a small in-memory set: its train images, then its test images (a copy)."""
    if train.images.shape == test.images.shape and torch.equal(train.images, test.images):
        return ImageDataset(**{**train.__dict__, "split": "all"})
    return ImageDataset(name=train.name, split="all", images=torch.cat([train.images, test.images]),
                        labels=torch.cat([train.labels, test.labels]), class_names=train.class_names,
                        factors={k: np.concatenate([v, test.factors[k]]) for k, v in train.factors.items()},
                        factor_names=train.factor_names, label_factor=train.label_factor)


def display_title(name: str) -> str:
    """How a dataset is named to people: a registry name as is; ``folder:PATH`` by its folder's name, or for an
    uploaded zip by the zip's file name (recorded when it was unpacked), never a server path."""
    if not name.startswith("folder:"):
        return name
    path = name[len("folder:"):].rstrip("/" + os.sep) or name
    for folder in (path, os.path.dirname(path)):
        try:
            with open(os.path.join(folder, ZIP_NAME_FILE), encoding="utf-8") as fh:
                title = fh.read().strip()
            if title:
                return title
        except (OSError, ValueError):
            continue
    return os.path.basename(path) or path


ZIP_NAME_FILE = ".zip-name"  # written beside an unpacked upload (hidden: never scanned as an image)


def check_image_size(size) -> int:
    """``size`` as an int side in pixels, 8..1024; :class:`DatasetError` (one sentence) for anything else."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise DatasetError(f"image size must be a whole number of pixels between 8 and 1024, got {size!r}")
    if not 8 <= int(size) <= 1024:
        raise DatasetError(f"image size must be between 8 and 1024 px, got {size}")
    return int(size)


def load_dataset(name: str, split: str = "train", label: str | None = None, progress=None, image_size: int | None = None,
                 **options) -> ImageDataset:
    """Load dataset ``name``'s ``split``, cached per process.

    Args:
        name: a registry name or ``folder:PATH``.
        split: "train", "test" (deterministic, seeded) or "all" (train then test; for a folder, a view of the
            one memory-mapped store, for a built-in set a copy).
        label: relabel by this factor (datasets with factors only).
        progress: for a folder whose image store must be built first, ``progress(fraction, text)`` as it is
            built (not part of the cache key).
        image_size: the side in pixels (8..1024; None: the dataset's own). A folder loads at it (its ``size`` option);
            any other dataset has one fixed size and is refused (one sentence) unless ``image_size`` is that size.
        options: dataset-specific keyword options (e.g. ``n=2000`` for procedural sets).

    Raises:
        DatasetError: unknown name, bad split or option, an image size a fixed-size dataset does not have, or the
            dataset cannot be read.
    """
    if split not in SPLITS:
        raise DatasetError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if image_size is not None:
        image_size = check_image_size(image_size)
        if name.startswith("folder:"):
            options = {**options, "size": image_size}
        else:
            ds = load_dataset(name, split, label=label, progress=progress, **options)
            if ds.image_size != (image_size, image_size):
                h, w = ds.image_size
                raise DatasetError(f"{display_title(name)} has {h}x{w} px images and cannot be trained or embedded at "
                                   f"{image_size} px; image size applies to folder:PATH datasets, leave it unset here")
            return ds
    if progress is not None and name.startswith("folder:"):
        key, extra = _resolve(name)
        module = importlib.import_module(DATASETS[key][0])
        try:
            module.prepare(**extra, progress=progress, **options)  # builds the store once; the load below opens it
        except TypeError as exc:
            raise DatasetError(f"{name}: bad option ({exc})") from exc
    ds = _load_cached(name, split, tuple(sorted(options.items())))
    if label and label != ds.label_factor:
        ds = ds.relabel(label)
    return ds
