"""An on-disk image store: a folder's images decoded once into a memory-mapped uint8 array.

Layout of one store, ``<cache>/images/<key>/``:

* ``images.u8``: the pixels, raw uint8 ``[N, C, H, W]`` in C order (no header), rows in *split order*:
  the ``n_train`` training images first, then the test images, each part in file order. A split is then
  a contiguous slice of the one memmap (``train = [:n_train]``, ``test = [n_train:]``, ``all = [:]``):
  three views of the same pages, nothing copied.
* ``labels.npy`` (int64 ``[N]``) and ``names.npy`` (str ``[N]``, file names relative to the folder).
* ``meta.json``: shape, class names, ``n_train``, the skipped files with their reasons, what was built
  from what (``source``), and the version of this layout. Written last.

``key`` is a hash of the folder's fingerprint (every candidate file's relative path, size and
modification time, :func:`fingerprint`) and the load options, so a changed folder gets a new key and is
rebuilt; the older store of the same folder and options is removed when the new one is complete.

A store is never half-written: :func:`build_store` writes into a temporary folder beside the final one
and renames it into place (one atomic ``rename``). A build killed mid-way leaves the previous store (or
none) plus a temporary folder that the next build removes once its writer's process is gone.

The stores are bounded like the cache of derived arrays (:mod:`ssl_viz.cache`): after each build the least
recently used ones (each open touches its ``meta.json``) are removed until together they take at most
``$SSL_VIZ_STORE_MAX_MB`` (default 32768 MB); the store just built or opened is never removed. A removed
store that another process still has mapped stays readable to it (the file lives until it is unmapped).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssl_viz.fileio import atomic_write_json, pid_alive
from ssl_viz.paths import cache_dir

VERSION = 1
DEFAULT_MAX_MB = 32768
IMAGES, LABELS, NAMES, META = "images.u8", "labels.npy", "names.npy", "meta.json"
TMP_PREFIX = ".build-"
ORPHAN_AGE_S = 60.0
MAX_OPENED = 8  # stores kept mapped per process for reuse
CHUNK_BYTES = 64 << 20  # rows moved per read in the split-order pass

Progress = Callable[[float, str], None]
"""``progress(fraction in [0, 1], text)``: called from the building thread as the build advances."""


class StoreError(OSError):
    """A store cannot be built (disk full, unwritable cache folder); the message says why."""


@dataclass(frozen=True)
class ImageStore:
    """An opened store.

    Attributes:
        path: its folder.
        images: read-only (copy-on-write) memmap, uint8 ``[N, C, H, W]``; indexing a batch reads only that batch.
        labels: int64 ``[N]`` (``-1``: unlabelled); names: str ``[N]``, file names relative to the source folder.
        meta: ``meta.json`` (``n_train``, ``class_names``, ``skipped``, ``source``, ...).
    """

    path: Path
    images: np.ndarray
    labels: np.ndarray
    names: np.ndarray
    meta: dict

    @property
    def n_train(self) -> int:
        return int(self.meta["n_train"])

    def rows(self, split: str) -> slice:
        """The rows of ``split`` ("train", "test" or "all") as a slice of :attr:`images`."""
        if split == "train":
            return slice(0, self.n_train)
        if split == "test":
            return slice(self.n_train, len(self.labels))
        if split == "all":
            return slice(0, len(self.labels))
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")

    @property
    def disk_bytes(self) -> int:
        return folder_bytes(self.path)


def stores_dir(root: Path | None = None) -> Path:
    """Where the stores live: ``<cache>/images`` (``$SSL_VIZ_CACHE``, see :mod:`ssl_viz.paths`)."""
    return (root or cache_dir()) / "images"


def max_store_bytes() -> int:
    """``$SSL_VIZ_STORE_MAX_MB`` (default 32768) in bytes."""
    try:
        return max(0, int(float(os.environ.get("SSL_VIZ_STORE_MAX_MB", DEFAULT_MAX_MB)) * 2**20))
    except ValueError:
        return DEFAULT_MAX_MB * 2**20


def fingerprint(entries: Sequence[tuple[str, int, int]]) -> str:
    """Identity of a folder's content: sha256 over ``(relative path, size in bytes, mtime in ns)`` of each file."""
    digest = hashlib.sha256()
    for name, size, mtime_ns in entries:
        digest.update(f"{name}\0{size}\0{mtime_ns}\n".encode("utf-8", "backslashreplace"))
    return digest.hexdigest()


def store_key(source: dict, content: str) -> str:
    """The folder name of the store built from ``source`` (folder and load options, JSON-able) with ``content``
    (:func:`fingerprint`)."""
    text = json.dumps({"source": source, "content": content, "version": VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def folder_bytes(path: Path) -> int:
    """Bytes the files of ``path`` take on disk (allocated blocks; 0 if it is gone)."""
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


_opened: dict[Path, tuple[tuple, ImageStore]] = {}  # one mapping per store and process: every view shares it


def _identity(path: Path) -> tuple:
    a, b = os.stat(path / IMAGES), os.stat(path / META)
    return a.st_ino, a.st_size, a.st_mtime_ns, b.st_ino


def open_store(key: str, root: Path | None = None) -> ImageStore | None:
    """The complete store ``key``, or None when there is none (or it is damaged: then it is removed).

    Opening reads the small index files and maps ``images.u8``; no pixel is read. Within a process the store
    is mapped once (while its files are unchanged), so train, test and all are views of one mapping.
    """
    path = stores_dir(root) / key
    with contextlib.suppress(OSError):
        ident = _identity(path)
        if path in _opened and _opened[path][0] == ident:
            with contextlib.suppress(OSError):
                os.utime(path / META)
            return _opened[path][1]
    _opened.pop(path, None)
    try:
        with open(path / META, encoding="utf-8") as fh:
            meta = json.load(fh)
        if meta.get("version") != VERSION:
            raise ValueError("old layout")
        shape = tuple(int(s) for s in meta["shape"])
        labels = np.load(path / LABELS, allow_pickle=False)
        names = np.load(path / NAMES, allow_pickle=False)
        expected = int(np.prod(shape))
        if len(labels) != shape[0] or len(names) != shape[0] or os.path.getsize(path / IMAGES) != expected or shape[0] == 0:
            raise ValueError("sizes do not match")
        images = np.memmap(path / IMAGES, dtype=np.uint8, mode="c", shape=shape)  # copy-on-write: the file is never written
    except FileNotFoundError:
        return None
    except PermissionError:
        return None
    except (OSError, ValueError, KeyError, TypeError):  # damaged (a disk error, a hand edit): rebuilt by the caller
        _remove(path)
        return None
    opened = ImageStore(path=path, images=images, labels=labels, names=names, meta=meta)
    with contextlib.suppress(OSError):
        os.utime(path / META)  # recently used: pruned last
        _opened[path] = (_identity(path), opened)
        while len(_opened) > MAX_OPENED:  # forget the oldest (its datasets keep their own mapping alive)
            _opened.pop(next(iter(_opened)))
    return opened


def build_store(
    key: str,
    count: int,
    shape: tuple[int, int, int],
    decode: Callable[[int], np.ndarray],
    split: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    labels: np.ndarray,
    names: Sequence[str],
    meta: dict,
    workers: int = 2,
    progress: Progress | None = None,
    root: Path | None = None,
    replaces: Callable[[dict], bool] | None = None,
) -> ImageStore:
    """Decode ``count`` images into a new store ``key`` and return it opened.

    Args:
        count: candidate images; ``decode(k)`` returns image k as uint8 ``shape`` = ``(C, H, W)`` or raises
            ValueError(reason) to skip it (skips are added to ``meta["skipped"]`` as ``[names[k], reason]``).
        split: ``split(ok)`` gets the indices ``[n_ok]`` of the images that decoded and returns ``(train, test)``,
            sorted index arrays into ``range(count)`` covering ``ok``: the split is drawn after the failures
            are known, so a corrupt file never takes a valid image's place.
        labels: int64 ``[count]``; names: ``count`` file names; meta: extra JSON-able fields for ``meta.json``.
        workers: decoding threads (PIL decodes without holding the GIL).
        progress: ``progress(fraction, text)`` as images are decoded.
        replaces: ``replaces(other_meta)`` says whether another store is an older version of this one
            (same folder and options): those are removed once this one is in place.

    Raises:
        StoreError: the store cannot be written (no space, unwritable cache); nothing is left behind.
        ValueError: no image decoded (the message lists the first skip).
    """
    folder = stores_dir(root)
    final = folder / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_orphan_builds(folder)
        tmp = folder / f"{TMP_PREFIX}{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as err:
        raise StoreError(err.errno, f"cannot create the image store under {folder}: {err.strerror or err}") from err
    try:
        skipped, ok = _decode_into(tmp / IMAGES, count, shape, decode, workers, progress)
        reasons = [[str(names[k]), why] for k, why in skipped]
        if not len(ok):
            raise ValueError(reasons[0][1] if reasons else "no images")
        train, test = split(ok)
        order = np.concatenate([train, test]).astype(np.int64)
        if progress is not None:
            progress(1.0, f"ordering {len(order):,} images by split")
        _to_split_order(tmp / IMAGES, order, int(np.prod(shape)), np.asarray(test, dtype=np.int64))
        np.save(tmp / LABELS, np.asarray(labels, dtype=np.int64)[order], allow_pickle=False)
        np.save(tmp / NAMES, np.asarray([str(names[k]) for k in order], dtype=str), allow_pickle=False)
        full = {**meta, "version": VERSION, "shape": [len(order), *shape], "n_train": int(len(train)),
                "skipped": list(meta.get("skipped", [])) + reasons, "built": time.time()}
        atomic_write_json(tmp / META, full)
        _fsync(tmp / IMAGES)
        _install(tmp, final)
    except BaseException as err:
        _remove(tmp)
        if isinstance(err, OSError) and not isinstance(err, StoreError):
            raise StoreError(err.errno, f"cannot write the image store {final}: {err.strerror or err} "
                                        "(free some space or set SSL_VIZ_STORE_MAX_MB lower)") from err
        raise
    if replaces is not None:
        for other in _complete(folder):
            if other.name != key and replaces(read_meta(other)):
                _remove(other)
    prune(folder, keep=final)
    store = open_store(key, root)
    if store is None:  # pruned or removed by another process between the rename and now
        raise StoreError(f"the image store {final} vanished right after it was built")
    return store


def _decode_into(path: Path, count: int, shape: tuple[int, int, int], decode, workers: int,
                 progress: Progress | None) -> tuple[list[tuple[int, str]], np.ndarray]:
    """Decode image k into row k of the raw file ``path`` (positional writes, no mapping: the pages go to the
    file, not this process's memory). Returns the skips ``[(k, reason)]`` and the sorted indices that decoded."""
    row = int(np.prod(shape))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, count * row)

        def one(k: int) -> str | None:
            try:
                pixels = decode(k)
            except ValueError as err:
                return str(err)
            if pixels.shape != shape or pixels.dtype != np.uint8:
                return f"decoded to {pixels.dtype} {tuple(pixels.shape)}, not uint8 {shape}"
            view = memoryview(np.ascontiguousarray(pixels)).cast("B")
            written = os.pwrite(fd, view, k * row)
            if written != row:
                raise OSError(f"short write ({written} of {row} bytes)")
            return None

        failures: list[str | None] = [None] * count
        step = max(256, count // 200)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for start in range(0, count, step * max(1, workers)):
                stop = min(count, start + step * max(1, workers))
                for k, why in zip(range(start, stop), pool.map(one, range(start, stop), chunksize=16)):
                    failures[k] = why
                if progress is not None:
                    progress(stop / max(count, 1), f"decoding {stop:,} / {count:,} images")
    finally:
        os.close(fd)
    skipped = [(k, why) for k, why in enumerate(failures) if why]
    return skipped, np.asarray([k for k, why in enumerate(failures) if not why], dtype=np.int64)


def _to_split_order(path: Path, order: np.ndarray, row: int, test: np.ndarray) -> None:
    """Rewrite the raw file ``path`` (rows in file order, failed ones among them) in place so that its rows are
    ``order`` (train rows, then test rows, each in file order), then truncate it to ``len(order)`` rows.

    One sequential pass: train rows move down to a write cursor (never past the rows still to be read), test
    rows go to a side file (extra disk: the test split only), which is appended at the end. Memory: one chunk.
    """
    keep = np.sort(order)
    side_path = path.with_name(path.name + ".test")
    per_chunk = max(1, CHUNK_BYTES // row)
    with open(path, "r+b") as fh, open(side_path, "w+b") as side:
        fd, cursor = fh.fileno(), 0
        for start in range(0, len(keep), per_chunk):
            ks = keep[start:start + per_chunk]
            lo, hi = int(ks[0]), int(ks[-1]) + 1
            block = np.frombuffer(os.pread(fd, (hi - lo) * row, lo * row), dtype=np.uint8).reshape(hi - lo, row)
            is_test = np.isin(ks, test)
            train_rows = block[ks[~is_test] - lo]
            if len(train_rows) and not (cursor == lo and len(train_rows) == hi - lo):  # already in place otherwise
                os.pwrite(fd, memoryview(np.ascontiguousarray(train_rows)).cast("B"), cursor * row)
            cursor += len(train_rows)
            if is_test.any():
                side.write(memoryview(np.ascontiguousarray(block[ks[is_test] - lo])).cast("B"))
        side.flush()
        side.seek(0)
        while chunk := side.read(per_chunk * row):
            os.pwrite(fd, chunk, cursor * row)
            cursor += len(chunk) // row
        fh.truncate(cursor * row)
    side_path.unlink()


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` onto ``final`` atomically; an existing (stale or concurrent) store there is
    moved aside first, so a reader sees the old store or the new one, never a mix."""
    try:
        os.rename(tmp, final)
    except OSError:
        trash = final.with_name(f"{TMP_PREFIX}old-{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, trash)
        os.rename(tmp, final)
        _remove(trash)
    _fsync_dir(final.parent)


def read_meta(path: Path) -> dict:
    """A store folder's ``meta.json`` ({} when unreadable)."""
    try:
        with open(path / META, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _complete(folder: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir() and (p / META).exists()]
    return []


def prune(folder: Path | None = None, max_bytes: int | None = None, keep: Path | None = None) -> int:
    """Remove the least recently used stores under ``folder`` beyond ``max_bytes``; returns how many. ``keep`` stays."""
    folder = folder or stores_dir()
    max_bytes = max_store_bytes() if max_bytes is None else max_bytes
    stores = []
    for path in _complete(folder):
        with contextlib.suppress(OSError):
            stores.append(((path / META).stat().st_mtime, folder_bytes(path), path))
    stores.sort(key=lambda s: s[0], reverse=True)  # newest first
    total, removed = 0, 0
    for _, size, path in stores:
        total += size
        if total > max_bytes and path != keep:
            _remove(path)
            removed += 1
    return removed


def remove_orphan_builds(folder: Path, min_age_s: float = ORPHAN_AGE_S) -> int:
    """Remove temporary build folders whose builder's process is gone and that are older than ``min_age_s``."""
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if not entry.name.startswith(TMP_PREFIX):
                continue
            pid = entry.name.rsplit(".", 2)[-2] if entry.name.count(".") >= 3 else ""
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime >= min_age_s:
                    _remove(Path(entry.path))
                    removed += 1
    return removed


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
