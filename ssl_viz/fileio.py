"""Atomic file writes: a temp file in the same folder, fsync, then rename.

A reader (or a crash) never sees a half-written file: either the old content
or the new one. A full disk (or quota) ends the write with an ``OSError`` whose
message names the file and says the previous version is unchanged; the temp file
is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG})
FULL_TEXTS = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122", "file too large")
LOW_SPACE = 1 << 20  # a writer failing with less free space than this ran out of disk


def looks_like_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space: errno ENOSPC/EDQUOT/EFBIG, a library's message saying so
    (safetensors: "os error 28"), or a nearly full file system (torch.save only says "unexpected pos")."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    if not isinstance(exc, Exception):
        return False
    if any(t in str(exc).lower() for t in FULL_TEXTS):
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


def disk_full_error(path: Path, exc: BaseException) -> OSError:
    """``exc`` re-worded for the user: which file, and that its previous content is intact."""
    code = exc.errno if isinstance(exc, OSError) and exc.errno in DISK_FULL else errno.ENOSPC
    reason = {errno.ENOSPC: "no space left on device", errno.EFBIG: "file too large"}.get(code, "disk quota exceeded")
    return OSError(code, f"{reason} while writing {path.name}; the previous {path.name} (if any) is unchanged. "
                              "Free some space and try again (a training run can be resumed).", str(path))


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` onto ``path``.

    On any error (or KeyboardInterrupt) ``path`` keeps its previous content and the
    temp file is removed; a full disk raises an ``OSError`` with a clear message.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphan_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(path, exc) from exc
        raise
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (and safetensors) make 0600; finished files get the usual permissions
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = looks_like_disk_full(exc, path.parent)  # before the temp file frees its space
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if full:
            raise disk_full_error(path, exc) from exc
        raise
    _fsync_dir(path.parent)


ORPHAN_AGE_S = 60.0


def remove_orphan_temps(path: Path, min_age_s: float = ORPHAN_AGE_S) -> int:
    """Remove temp files of ``path`` left by writers that were killed mid-write (their pid is gone and the
    file is older than ``min_age_s``); returns how many. Temps of live writers are never touched."""
    removed = 0
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            pid = entry.name[len(prefix):].split(".", 1)[0]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime >= min_age_s:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this process counts; another user's process counts too)."""
    return _pid_alive(pid)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort; not every system can open a folder)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_json(path: str | Path, default=None):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default
