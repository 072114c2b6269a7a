"""Fashion-MNIST (Xiao et al. 2017): 28x28 grayscale clothing, 60k train / 10k test.

The four idx files are read from the first place that has them:

1. ``$SSL_VIZ_DATA`` and ``$SSL_VIZ_DATA/fashion-mnist``;
2. ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu package ``dataset-fashion-mnist``);
3. torchvision's layout ``<cache>/FashionMNIST/raw`` (cache: ``$SSL_VIZ_CACHE`` or ``~/.cache/ssl_viz``);
4. else a torchvision download into that cache (needs internet).

Each file may be gzipped or not. Parsed arrays are cached as ``.npy`` next to
the other cached files, keyed by the source file's path, size and mtime, so a
second process loads the 60k training images in a few milliseconds.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import zlib
from pathlib import Path

import numpy as np
import torch

from ssl_viz.data.base import DatasetError, ImageDataset

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HOW_TO_GET = (
    "Fashion-MNIST not found: install it with `sudo apt-get install dataset-fashion-mnist`, "
    "or set SSL_VIZ_DATA to a folder holding the four idx files (train-images-idx3-ubyte[.gz] ...)"
)
# idx magic numbers: 0x00 0x00 <dtype 0x08 = ubyte> <ndim>
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}


def cache_root() -> Path:
    """Where ssl-viz caches derived files: ``$SSL_VIZ_CACHE`` or ``~/.cache/ssl_viz``."""
    return Path(os.environ.get("SSL_VIZ_CACHE") or Path.home() / ".cache" / "ssl_viz").expanduser()


def candidate_dirs() -> list[Path]:
    """Folders searched for the idx files, in order (duplicates removed)."""
    dirs: list[Path] = []
    if os.environ.get("SSL_VIZ_DATA"):
        root = Path(os.environ["SSL_VIZ_DATA"]).expanduser()
        dirs += [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    dirs.append(DEBIAN_DIR)
    for root in (cache_root(), Path.home() / ".cache" / "ssl_viz"):
        dirs.append(root / "FashionMNIST" / "raw")
    return list(dict.fromkeys(dirs))


def _find(dirname: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (dirname / name).is_file():
            return dirname / name
    return None


def find_files(split: str) -> tuple[Path, Path] | None:
    """The (images, labels) idx files of ``split`` from the first folder holding both, or None."""
    image_stem, label_stem, _ = FILES[split]
    for dirname in candidate_dirs():
        images, labels = _find(dirname, image_stem), _find(dirname, label_stem)
        if images and labels:
            return images, labels
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an idx file (gzipped or not) of unsigned bytes into a uint8 array with ``ndim`` dims.

    Raises DatasetError when the file is truncated, not gzip/idx, or has the wrong magic number.
    """
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = zlib.decompress(raw, 31)  # 31: gzip wrapper; faster than gzip.open().read()
    except (OSError, zlib.error, gzip.BadGzipFile) as err:
        raise DatasetError(f"cannot read {path}: {err}") from err
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise DatasetError(f"{path} is not an idx file (only {len(raw)} bytes)")
    magic, *dims = (int(v) for v in np.frombuffer(raw, dtype=">u4", count=1 + ndim))
    if magic != _IDX_MAGIC[ndim]:
        raise DatasetError(f"{path}: bad idx magic number {magic:#010x}, expected {_IDX_MAGIC[ndim]:#010x} (corrupt or wrong file?)")
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DatasetError(f"{path}: idx header says {dims} ({expected} bytes) but the file holds {len(raw) - header} (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _cache_file(images_path: Path, labels_path: Path) -> Path:
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in (images_path, labels_path)]
    key = hashlib.sha1(repr(stats).encode()).hexdigest()[:16]
    return cache_root() / "fashion-mnist" / f"{images_path.name.split('-')[0]}-{key}.npz"


def read_arrays(images_path: Path, labels_path: Path, expected: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``[N, 28, 28]`` and labels uint8 ``[N]``, through the ``.npz`` cache when possible."""
    cached = _cache_file(images_path, labels_path)
    if cached.is_file():
        try:
            with np.load(cached) as npz:
                return npz["images"], npz["labels"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: parse again and overwrite it
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_path}: expected 28x28 images, got {images.shape[1:]}")
    if len(images) != len(labels):
        raise DatasetError(f"{images_path}: {len(images)} images but {len(labels)} labels in {labels_path}")
    if expected is not None and len(images) != expected:
        raise DatasetError(f"{images_path}: expected {expected} images, got {len(images)}")
    if labels.max(initial=0) >= len(CLASS_NAMES):
        raise DatasetError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    _write_cache(cached, images, labels)
    return images, labels


def _write_cache(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Best effort: an unwritable cache only costs speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, images=images, labels=labels)  # uncompressed: loads in milliseconds
        os.replace(tmp, path)
    except OSError:
        pass


def download(timeout: float = 20.0) -> bool:
    """Try torchvision's download into ``<cache>/FashionMNIST/raw``; True on success."""
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError:
        return False
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # fail fast when offline instead of hanging
    try:
        FashionMNIST(str(cache_root()), train=True, download=True)
        return True
    except Exception:  # noqa: BLE001 - any network/IO failure means "not available"
        return False
    finally:
        socket.setdefaulttimeout(previous)


def load(split: str = "train", download_if_missing: bool = True) -> ImageDataset:
    """Fashion-MNIST ``split`` as uint8 ``[N, 1, 28, 28]`` (N = 60000 train, 10000 test), labels 0..9."""
    if split not in FILES:
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    found = find_files(split)
    if found is None and download_if_missing and download():
        found = find_files(split)
    if found is None:
        raise DatasetError(HOW_TO_GET)
    images, labels = read_arrays(*found, expected=FILES[split][2])
    if not images.flags.writeable:  # parsed straight from the file's bytes; torch wants writable memory
        images = images.copy()
    return ImageDataset(
        name="fashion-mnist",
        split=split,
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=list(CLASS_NAMES),
    )
