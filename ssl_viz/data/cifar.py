"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) in torchvision's Python layout: 32x32 colour, 50k train / 10k test.

Names: ``cifar10`` / ``cifar100`` (looked for in the default places of :mod:`ssl_viz.data.standard`,
else downloaded by torchvision where the network allows) and ``cifar10:PATH`` / ``cifar100:PATH``
(PATH is ``cifar-10-batches-py`` / ``cifar-100-python``, under any name, or a folder holding it;
never downloaded). Class names come from the meta files (``batches.meta``'s ``label_names``,
``meta``'s ``fine_label_names``); CIFAR-100's 20 superclasses are the factor ``coarse``
(``load_dataset("cifar100", label="coarse")``), named by ``coarse_label_names``.

Reading is **torchvision's own** (:class:`torchvision.datasets.CIFAR10` / ``CIFAR100`` with
``download=False``): it checks every file's md5 against the published checksum before it unpickles
anything, and that check is what makes reading these pickles safe (a pickle can run code; only the
published files are ever opened by ``pickle``). A file that does not match is refused with a sentence
naming it. The one thing torchvision does not read is CIFAR-100's ``coarse_labels``: they are read here
from the same, already verified, files. Tests write tiny files in the exact layout (the same pickled
dicts) and put their own md5s in place of the published ones, the one thing a tiny file cannot match.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ssl_viz.data.base import DatasetError, ImageDataset
from ssl_viz.data.standard import default_roots, locate, try_download
from ssl_viz.paths import cache_dir

TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
DOWNLOAD_HOST = "www.cs.toronto.edu"


def torchvision_class(variant: str) -> type:
    """torchvision's dataset class of ``variant`` (``"cifar10"`` or ``"cifar100"``)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    return {"cifar10": CIFAR10, "cifar100": CIFAR100}[variant]


def expected_files(cls: type) -> list[tuple[str, str]]:
    """(file name, published md5) of every file torchvision checks: the train and test batches and the meta file."""
    return [tuple(entry) for entry in cls.train_list + cls.test_list] + [(cls.meta["filename"], cls.meta["md5"])]


def _unpickle(path: Path) -> dict:
    """A verified CIFAR file's dict (Python 2 pickles: ``latin1`` keeps their byte strings)."""
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")  # noqa: S301 - only after torchvision's md5 check of this file


def _refusal(variant: str, folder: Path) -> str:
    """The sentence for a folder torchvision refused: the first file whose md5 is not the published one."""
    from torchvision.datasets.utils import check_integrity

    for name, md5 in expected_files(torchvision_class(variant)):
        if not check_integrity(str(folder / name), md5):
            return (f"{folder / name} does not match the published {TITLES[variant]} checksum (a corrupt or different file); "
                    "only the published files are read, since a pickle can run code")
    return f"torchvision cannot read {TITLES[variant]} from {folder}"


def read_split(variant: str, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str], dict, dict]:
    """Read ``split`` of the CIFAR folder ``folder`` through torchvision.

    Returns:
        images uint8 ``[N, 3, 32, 32]`` (the files' own channel-first order, no copy), labels int64 ``[N]``,
        class names, factors (``{"coarse": int64 [N]}`` for CIFAR-100, else empty) and their value names.

    Raises:
        DatasetError: a file is missing or does not match its published checksum.
    """
    cls = torchvision_class(variant)
    at = type(cls.__name__, (cls,), {"base_folder": folder.name})  # the folder may be named anything
    try:
        tv = at(str(folder.parent), train=split == "train", download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise DatasetError(_refusal(variant, folder)) from exc
    images = np.ascontiguousarray(tv.data.transpose(0, 3, 1, 2))  # torchvision's HWC view back to the files' CHW
    labels = np.asarray(tv.targets, dtype=np.int64)
    factors, factor_names = {}, {}
    if variant == "cifar100":
        entries = cls.train_list if split == "train" else cls.test_list
        factors["coarse"] = np.concatenate([np.asarray(_unpickle(folder / n)["coarse_labels"], dtype=np.int64) for n, _ in entries])
        factor_names["coarse"] = list(_unpickle(folder / cls.meta["filename"])["coarse_label_names"])
    return images, labels, list(tv.classes), factors, factor_names


def load(split: str = "train", path: str | Path | None = None, variant: str = "cifar10", download_if_missing: bool = True) -> ImageDataset:
    """CIFAR-10 / CIFAR-100 ``split`` as uint8 ``[N, 3, 32, 32]`` (N = 50000 train, 10000 test).

    Args:
        split: ``"train"`` or ``"test"``.
        path: the folder (``cifar10:PATH``); None looks in the default places.
        variant: ``"cifar10"`` (labels 0..9) or ``"cifar100"`` (fine labels 0..99, factor ``coarse`` 0..19).
        download_if_missing: with no ``path``, let torchvision download into the cache when the network answers.

    Raises:
        DatasetError: a bad split or variant, a folder lacking the files (the files expected are named),
            a file that is not the published one, or no data found and none downloadable.
    """
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    if variant not in TITLES:
        raise DatasetError(f"unknown CIFAR variant {variant!r}; choose cifar10 or cifar100")
    cls = torchvision_class(variant)
    names = [n for n, _ in expected_files(cls)]
    folder = locate(variant, path, cls.base_folder, names)
    if folder is None and download_if_missing:
        root = cache_dir().expanduser()
        if try_download(DOWNLOAD_HOST, lambda: cls(str(root), train=True, download=True)):
            folder = locate(variant, None, cls.base_folder, names)
    if folder is None:
        raise DatasetError(f"{TITLES[variant]} not found: put torchvision's {cls.base_folder} folder in one of "
                           f"{', '.join(str(r) for r in default_roots())}, or name it as {variant}:PATH "
                           f"(the download from {DOWNLOAD_HOST} was not possible)")
    images, labels, classes, factors, factor_names = read_split(variant, folder, split)
    return ImageDataset(
        name=variant if path is None else f"{variant}:{path}",
        split=split,
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        class_names=classes,
        factors=factors,
        factor_names=factor_names,
    )
