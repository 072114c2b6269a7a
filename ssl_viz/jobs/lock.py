"""One lock per runs folder, so two browser sessions (or a session and the CLI) never start the same queued run twice."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

LOCK = ".jobs.lock"   # in the runs folder, next to the run directories

_HELD = threading.local()
_THREAD_LOCK = threading.RLock()


@contextlib.contextmanager
def _locked(root: Path):
    """Exclusive lock on ``root`` across threads and processes (re-entrant within a thread)."""
    key = str(Path(root).resolve())
    held = getattr(_HELD, "keys", None)
    if held is None:
        held = _HELD.keys = {}
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, open(Path(root) / LOCK, "a") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: threads only
            pass
        held[key] = 1
        try:
            yield
        finally:
            held[key] = 0
