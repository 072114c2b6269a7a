"""An on-disk cache of derived arrays (embeddings, projections), keyed by what made them.

The key is a dict (checkpoint fingerprint, dataset, parameters); its JSON is
hashed into a file name. Values are dicts of numpy arrays stored as ``.npz``
and written atomically, so a second view of the same thing is instant, also
after the app restarts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ssl_viz.io import atomic_write
from ssl_viz.paths import cache_dir


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def fingerprint(path: str | Path) -> str:
    """Cheap identity of a model: path, size and mtime of its checkpoint (or card)."""
    path = Path(path)
    target = path / "checkpoint.safetensors" if path.is_dir() else path
    if not target.exists() and path.is_dir():
        target = path / "card.json"
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
                return {k: data[k] for k in data.files}
        except (OSError, ValueError):
            os.unlink(path)
    arrays = compute()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    try:
        atomic_write(path, write)
    except OSError:
        pass  # a full or read-only disk only costs the cache
    return arrays
