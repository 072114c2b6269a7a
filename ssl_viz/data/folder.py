"""Your own images: ``load_dataset("folder:/path/to/images")``.

Two layouts are understood:

* **ImageFolder**: one sub-folder per class (``root/cat/x.jpg``, ``root/dog/y.png``;
  nested folders inside a class folder are searched too). Class names are the
  sorted sub-folder names that hold at least one image file.
* **flat**: images directly in ``root`` and no sub-folder holding images:
  unlabelled (labels ``-1``, ``class_names == []``).

Every image is read by :func:`ssl_viz.data.decode.decode_image`, the decoding path uploads share
(EXIF rotation applied, 16-bit scaled, transparent pixels composited onto white), converted to RGB,
or to L when *every* image in the folder is grayscale, resized so its short side is ``size`` and
centre-cropped to ``size`` x ``size``.

The first load of a folder decodes every image once (threads, a progress callback) into an image store
under the cache folder (:mod:`ssl_viz.data.store`: a memory-mapped uint8 array and its index), keyed by the
folder's fingerprint (paths, sizes, modification times) and the load options; later loads open it without
decoding, and a changed folder is rebuilt. There is no cap on the number of images (``max_images``, if given,
takes a seeded subset): the pixels stay on disk and a batch reads only its rows.

What is skipped, and why, is reported, never silently dropped: files with a
non-image extension, files PIL cannot open or decode (corrupt, truncated),
images over ``max_pixels`` (decompression-bomb guard). Every file is decoded
before the split is drawn, so the report lists every skipped file whatever the
split, and a corrupt file never takes a valid image's place. Hidden files and
folders (name starting with ``.``) are ignored. The report of each load is a
:class:`FolderReport`, available as ``ssl_viz.data.folder.last_report`` (the
latest load in this process) and ``ssl_viz.data.folder.report(path, split)``;
a summary is also logged.

Train/test: a deterministic split per class of the images that decoded (``test_fraction`` of each class,
at least one image when the class has two or more), seeded by ``seed`` and the
class name, so adding a class does not reshuffle the others. ``split="all"`` is both.
"""

from __future__ import annotations

import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssl_viz.data import store
from ssl_viz.data.base import DatasetError, ImageDataset
from ssl_viz.data.decode import GRAY_MODES, MAX_PIXELS, ImageDecodeError, decode_image, open_image
from ssl_viz.data.store import ImageStore, Progress, StoreError, fingerprint, store_key
from ssl_viz.safety import read_roots

log = logging.getLogger(__name__)

# Malformed files make PIL raise almost anything (struct.error, IndexError, ...): a bad file is skipped, never fatal.
_READ_ERRORS = (Exception,)


def _image_extensions() -> frozenset[str]:
    Image.init()
    return frozenset(ext.lower() for ext in Image.registered_extensions())


IMAGE_EXTENSIONS = _image_extensions()


@dataclass
class FolderReport:
    """What one :func:`load` found, loaded and skipped.

    Attributes:
        path: the folder as given; split: "train", "test" or "all"; layout: "imagefolder" or "flat".
        mode: "RGB" or "L"; found: image files considered (after the cap), both splits together.
        loaded: images in this split's dataset.
        skipped: ``(file relative to path, reason)`` for every file left out (the same list for every split):
            by name or place, an unreadable header, or failing to decode.
        capped: image files dropped by ``max_images``.
        store: the image store's folder; disk_bytes: what it takes on disk.
    """

    path: str
    split: str
    layout: str = ""
    mode: str = "RGB"
    found: int = 0
    loaded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    capped: int = 0
    store: str = ""
    disk_bytes: int = 0

    def summary(self) -> str:
        """One line for logs and the UI."""
        text = f"{self.path} [{self.split}]: {self.loaded} images loaded ({self.layout}, {self.mode}), {len(self.skipped)} skipped"
        return text + (f", {self.capped} over the cap" if self.capped else "")

    def skipped_text(self, first: int | None = None) -> str:
        """The skipped files as lines ``file<TAB>reason`` (all of them, or the ``first`` few)."""
        rows = self.skipped if first is None else self.skipped[:first]
        return "".join(f"{name}\t{why}\n" for name, why in rows)


last_report: FolderReport | None = None
_reports: dict[tuple[str, str], FolderReport] = {}


def report(path: str | os.PathLike, split: str = "train") -> FolderReport | None:
    """The report of the latest load of ``path``'s ``split`` in this process, or None."""
    return _reports.get((os.fsdecode(path), split))


def display_name(path: str | os.PathLike) -> str:
    """A printable str for any file name, also one that is not valid UTF-8 (bad bytes as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _files_under(folder: Path) -> list[Path]:
    """All non-hidden regular files below ``folder`` (symlinked folders not followed; no FIFOs), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]
        found += [p for f in filenames if not _is_hidden(f) and (p := Path(dirpath, f)).is_file()]
    return sorted(found, key=os.fsencode)


def _looks_like_image(path: Path) -> bool:
    """Image extension, or no extension at all (then PIL decides)."""
    return path.suffix == "" or path.suffix.lower() in IMAGE_EXTENSIONS


def _not_image(path: Path) -> tuple[Path, str]:
    return path, f"not an image file ({path.suffix})"


def scan(root: Path) -> tuple[str, list[str], list[Path], list[int], list[tuple[Path, str]]]:
    """Find the layout and the candidate files of ``root``.

    Returns:
        ``(layout, class_names, files, labels, left_out)``: ``files[i]`` has class ``labels[i]``
        (``-1`` in a flat folder); ``left_out`` holds ``(file, reason)`` for files skipped by name or place.
    """
    with os.scandir(root) as entries:
        visible = [e for e in entries if not _is_hidden(e.name)]
    subdirs = sorted((Path(e.path) for e in visible if e.is_dir()), key=os.fsencode)
    top = sorted((Path(e.path) for e in visible if e.is_file()), key=os.fsencode)
    per_dir = {sub: _files_under(sub) for sub in subdirs}
    class_dirs = [sub for sub in subdirs if any(_looks_like_image(f) for f in per_dir[sub])]
    if not class_dirs:
        images = [f for f in top if _looks_like_image(f)]
        left_out = [_not_image(f) for f in top if not _looks_like_image(f)]
        left_out += [_not_image(f) for sub in subdirs for f in per_dir[sub]]
        return "flat", [], images, [-1] * len(images), left_out
    files, labels = [], []
    left_out = [(f, "outside any class folder") if _looks_like_image(f) else _not_image(f) for f in top]
    left_out += [_not_image(f) for sub in subdirs if sub not in class_dirs for f in per_dir[sub]]
    for label, sub in enumerate(class_dirs):
        for f in per_dir[sub]:
            if _looks_like_image(f):
                files.append(f)
                labels.append(label)
            else:
                left_out.append(_not_image(f))
    return "imagefolder", [display_name(d.name) for d in class_dirs], files, labels, left_out


def probe(path: Path, max_pixels: int) -> str:
    """The PIL mode of ``path`` from its header; raises ValueError(reason) when it must be skipped."""
    with _open_file(path) as fh, open_image(fh, max_pixels) as img:  # ImageDecodeError is a ValueError
        return img.mode


def _open_file(path: Path):
    """``path`` opened for reading; in the app only under the data roots, checking what was opened
    (:func:`ssl_viz.safety.open_data_file`). Raises ValueError(reason) when it cannot be or must not be read."""
    from ssl_viz.safety import open_data_file

    try:
        return open_data_file(path)
    except OSError as err:
        raise ValueError(f"cannot open: {err.strerror or err}") from err


def decode(path: Path, size: int, mode: str) -> np.ndarray:
    """Read, convert, resize the short side to ``size`` and centre-crop: uint8 ``[C, size, size]``, C = 1 (L) or 3 (RGB).

    The one decoding path of :func:`ssl_viz.data.decode.decode_image` (EXIF orientation, 16-bit scaling,
    transparency over white), shared with uploaded images.
    """
    with _open_file(path) as fh:
        return decode_image(fh, size, mode)


def split_files(labels: np.ndarray, test_fraction: float, seed: int, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-class deterministic split of ``range(len(labels))`` into sorted (train, test) index arrays.

    Each class (``-1`` = unlabelled counts as one class) puts ``round(test_fraction * n)`` images in test,
    clamped to ``[1, n - 1]`` when it has n >= 2 images (a single image goes to train).
    """
    train, test = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        name = class_names[label] if label >= 0 else ""
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8", "backslashreplace"))])
        idx = rng.permutation(idx)
        n_test = 0 if len(idx) < 2 else min(max(1, int(round(test_fraction * len(idx)))), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)


def _cap(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of a deterministic random subset of ``range(n)`` of at most ``limit``."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _map(func, items: list, workers: int) -> list:
    if workers <= 1 or len(items) < 8:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without holding the GIL
        return list(pool.map(func, items))


def _check_root(path: str | os.PathLike | None) -> Path:
    if path is None or os.fspath(path) == "":
        raise DatasetError("folder: needs a path, e.g. folder:/data/my-images")
    root = Path(os.fsdecode(path)).expanduser()
    if not root.exists():
        raise DatasetError(f"folder: {display_name(root)} does not exist")
    if not root.is_dir():
        raise DatasetError(f"folder: {display_name(root)} is not a directory")
    return root


def load(
    split: str = "train",
    path: str | os.PathLike | None = None,
    size: int = 64,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_images: int | None = None,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    progress: Progress | None = None,
) -> ImageDataset:
    """Images under ``path`` as uint8 ``[N, C, size, size]`` (C = 3, or 1 if all are grayscale), read from the
    folder's image store (:func:`prepare`: built on the first load, opened in well under a second later).

    Args:
        split: "train", "test" or "all" (both; see the module docstring for the split rule). The three are
            views of the one memory-mapped store: nothing is copied, a batch reads only its rows.
        path: the folder (ImageFolder layout or flat).
        size: output side in pixels (short side resized, then centre crop).
        test_fraction: share of each class that goes to test.
        seed: seeds the split and the ``max_images`` subset.
        max_images: at most this many image files are considered (a seeded random subset beyond it);
            None (the default): every image.
        max_pixels: larger images are skipped (decompression-bomb guard).
        workers: decoding threads of a build (default: one per CPU, at most 8).
        progress: ``progress(fraction, text)`` while a store is built (the CLI prints a line, the app draws a bar).

    Raises:
        DatasetError: bad options, missing path, not a directory, no readable image in this split, or a store
            that cannot be written (the reason, e.g. no space left, in one sentence).
    """
    if split not in ("train", "test", "all"):
        raise DatasetError(f"split must be 'train', 'test' or 'all', got {split!r}")
    image_store, rep = prepare(path, size, test_fraction, seed, max_images, max_pixels, workers, progress)
    rows = image_store.rows(split)
    rep = replace(rep, split=split, loaded=rows.stop - rows.start)
    _publish(rep)
    if rep.loaded == 0:
        hint = "; only one readable image, which goes to train" if split == "test" and len(image_store.labels) == 1 else ""
        raise DatasetError(f"folder: no readable images in {display_name(rep.path)} for split {split!r}{hint}")
    return ImageDataset(
        name=f"folder:{os.fsdecode(path)}",
        split=split,
        images=torch.from_numpy(image_store.images[rows]),  # a view of the memory map: zero-copy
        labels=torch.from_numpy(image_store.labels[rows]),
        class_names=list(image_store.meta["class_names"]),
        names=image_store.names[rows],
    )


def prepare(
    path: str | os.PathLike | None,
    size: int = 64,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_images: int | None = None,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    progress: Progress | None = None,
) -> tuple[ImageStore, FolderReport]:
    """The image store of ``path`` under these options, built if missing or if the folder changed (any file's
    path, size or modification time), and the load report (``split="all"``, ``loaded`` = every image).

    Reopening an unchanged folder lists and stats its files and maps the store (no image is read). Raises
    :class:`DatasetError` as :func:`load` does.
    """
    if not 8 <= int(size) <= 1024:
        raise DatasetError(f"folder: size must be between 8 and 1024, got {size}")
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"folder: test_fraction must be in (0, 1), got {test_fraction}")
    if max_images is not None and int(max_images) < 1:
        raise DatasetError(f"folder: max_images must be at least 1, got {max_images}")
    root, size = _check_root(path), int(size)
    workers = workers or min(8, os.cpu_count() or 1)
    rep = FolderReport(path=os.fsdecode(path), split="all")
    try:
        stats = listing(root)
    except OSError as err:
        raise DatasetError(f"folder: cannot list {display_name(root)}: {err}") from err
    source = {"folder": os.path.realpath(root), "size": size, "test_fraction": float(test_fraction), "seed": int(seed),
              "max_images": None if max_images is None else int(max_images), "max_pixels": int(max_pixels),
              # what this process may read decides which files a build skips: a store the command line built
              # (links followed) is never served by the confined app, nor the app's (links skipped) to the CLI
              "read_roots": None if read_roots() is None else sorted(map(str, read_roots()))}
    key = store_key(source, fingerprint(stats))
    found = store.open_store(key)
    if found is None:
        try:
            rep.layout, class_names, files, labels, left_out = scan(root)
        except OSError as err:
            raise DatasetError(f"folder: cannot list {display_name(root)}: {err}") from err
        found = _build(key, source, root, rep, class_names, files, labels, left_out, size, test_fraction, seed,
                       max_images, max_pixels, workers, progress)
    meta = found.meta
    rep.layout, rep.mode, rep.found, rep.capped = meta["layout"], meta["mode"], int(meta["found"]), int(meta["capped"])
    rep.skipped = [(name, why) for name, why in meta["skipped"]]
    rep.loaded, rep.store, rep.disk_bytes = len(found.labels), str(found.path), found.disk_bytes
    return found, rep


def _build(key, source, root, rep, class_names, files, labels, left_out, size, test_fraction, seed, max_images,
           max_pixels, workers, progress) -> ImageStore:
    """Cap, probe the headers (mode: L when every readable image is grayscale), decode into a new store."""
    keep = np.arange(len(files)) if max_images is None else _cap(len(files), int(max_images), seed)
    capped, found = len(files) - len(keep), len(keep)
    files, labels = [files[i] for i in keep], np.asarray(labels, dtype=np.int64)[keep]
    if progress is not None:
        progress(0.0, f"reading the headers of {len(files):,} files")
    modes = _map(lambda f: _try(probe, f, max_pixels), files, workers)
    skipped = [[_relative(f, root), reason] for f, reason in left_out]
    skipped += [[_relative(files[i], root), str(m)] for i, m in enumerate(modes) if isinstance(m, Exception)]
    readable = [i for i, m in enumerate(modes) if not isinstance(m, Exception)]
    mode = "L" if readable and all(modes[i] in GRAY_MODES for i in readable) else "RGB"
    files, labels = [files[i] for i in readable], labels[readable]

    def one(k: int) -> np.ndarray:
        try:
            return decode(files[k], size, mode)
        except ImageDecodeError:  # its message already says "cannot decode: ..." or why it was refused
            raise
        except _READ_ERRORS as err:
            raise ValueError(f"cannot decode: {type(err).__name__}: {err}") from err

    def split(ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        train, test = split_files(labels[ok], test_fraction, seed, class_names)
        return ok[train], ok[test]

    meta = {"source": source, "layout": rep.layout, "mode": mode, "class_names": class_names, "found": found,
            "capped": capped, "skipped": skipped}
    names = [_relative(f, root) for f in files]
    try:
        return store.build_store(key, len(files), (1 if mode == "L" else 3, size, size), one, split, labels, names, meta,
                                 workers=workers, progress=progress, replaces=lambda other: other.get("source") == source)
    except StoreError as err:
        raise DatasetError(f"folder: {err}") from err
    except ValueError:  # nothing decoded
        first = f"; skipped {len(skipped)}, e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DatasetError(f"folder: no readable images in {display_name(root)}{first}") from None


def listing(root: Path) -> list[tuple[str, int, int]]:
    """``(path relative to root, size, mtime_ns)`` of every non-hidden file below ``root``, sorted: what the
    folder's fingerprint is made of. One ``scandir`` walk and one ``stat`` per file (a symlinked folder is
    followed at the top, as :func:`scan` takes it for a class, and not below)."""
    out: list[tuple[str, int, int]] = []

    def walk(folder: str, prefix: str, follow: bool) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if _is_hidden(entry.name):
                    continue
                if entry.is_dir(follow_symlinks=follow):
                    walk(entry.path, prefix + entry.name + "/", False)
                elif entry.is_file():
                    st = entry.stat()
                    out.append((display_name(prefix + entry.name), st.st_size, st.st_mtime_ns))

    walk(os.fspath(root), "", True)
    out.sort()
    return out


def _try(func, *args):
    """``func(*args)``, or the ValueError it raised (used to collect skip reasons from threads)."""
    try:
        return func(*args)
    except ValueError as err:
        return err


def _relative(path: Path, root: Path) -> str:
    try:
        return display_name(path.relative_to(root))
    except ValueError:
        return display_name(path)


def _publish(rep: FolderReport) -> None:
    global last_report
    last_report = rep
    _reports[(rep.path, rep.split)] = rep
    if rep.skipped:
        log.warning("%s; e.g. %s: %s", rep.summary(), *rep.skipped[0])
    else:
        log.info(rep.summary())
