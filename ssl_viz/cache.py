"""An on-disk cache of derived arrays (embeddings, projections), keyed by what made them.

The key is a dict (checkpoint fingerprint, dataset, parameters); its JSON is
hashed into a file name. Values are dicts of numpy arrays stored as ``.npz``
and written atomically, so a second view of the same thing is instant, also
after the app restarts.

The cache is bounded: after each write the least recently used entries are
removed until all of them together take at most ``$SSL_VIZ_CACHE_MAX_MB``
(default 1024 MB). Only files this module wrote (``<namespace>/<hash>.npz``)
are ever removed; uploads and other files under the cache folder are not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ssl_viz.fileio import atomic_write
from ssl_viz.paths import cache_dir
from ssl_viz.rundir import CARD, CHECKPOINT

DEFAULT_MAX_MB = 1024
_ENTRY = re.compile(r"[0-9a-f]{24}\.npz")


def max_cache_bytes() -> int:
    """``$SSL_VIZ_CACHE_MAX_MB`` (default 1024) in bytes."""
    try:
        return max(0, int(float(os.environ.get("SSL_VIZ_CACHE_MAX_MB", DEFAULT_MAX_MB)) * 2**20))
    except ValueError:
        return DEFAULT_MAX_MB * 2**20


def prune(root: Path | None = None, max_bytes: int | None = None, keep: Path | None = None) -> int:
    """Remove the least recently used cache entries under ``root`` beyond ``max_bytes``; returns how many.

    ``keep`` (the entry just written) is never removed. Safe to run from several processes at once.
    """
    root = root or cache_dir()
    max_bytes = max_cache_bytes() if max_bytes is None else max_bytes
    entries = []
    with contextlib.suppress(OSError):
        for folder in root.iterdir():
            if not folder.is_dir() or folder.is_symlink():
                continue
            for path in folder.iterdir():
                if _ENTRY.fullmatch(path.name):
                    with contextlib.suppress(OSError):
                        st = path.stat()
                        entries.append((st.st_mtime, st.st_size, path))
    entries.sort(key=lambda e: e[0], reverse=True)  # newest first
    total, removed = 0, 0
    for _, size, path in entries:
        total += size
        if total > max_bytes and path != keep:
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def fingerprint(path: str | Path) -> str:
    """Cheap identity of a model: path, size and mtime of its checkpoint (or card)."""
    path = Path(path)
    target = path / CHECKPOINT if path.is_dir() else path
    if not target.exists() and path.is_dir():
        target = path / CARD
    try:
        st = target.stat()
        return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime_ns)}"
    except OSError:
        return str(path)


def cached_arrays(namespace: str, key: dict, compute: Callable[[], dict[str, np.ndarray]], root: Path | None = None) -> dict[str, np.ndarray]:
    """Return ``compute()``'s arrays, from ``<cache>/<namespace>/<hash>.npz`` when present."""
    folder = (root or cache_dir()) / namespace
    path = folder / f"{key_hash(key)}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: pruned last
            return arrays
        except Exception:  # noqa: BLE001 - a damaged or vanished entry (BadZipFile, EOFError, ...) is recomputed
            with contextlib.suppress(OSError):
                path.unlink()
    arrays = compute()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    try:
        atomic_write(path, write)
    except OSError:
        return arrays  # a full or read-only disk only costs the cache
    prune(root or cache_dir(), keep=path)
    return arrays
