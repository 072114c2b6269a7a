"""The training processes: which ones this server started, whether a process lives, and how it ended."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

_CHILDREN: dict[int, subprocess.Popen] = {}   # processes this server started (reaped on every poll)
_EXIT_CODES: dict[int, int] = {}               # their exit statuses, once reaped


def _track(proc: subprocess.Popen) -> None:
    """Remember a process this server started, to reap it and report its exit status."""
    _CHILDREN[proc.pid] = proc


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            _CHILDREN.pop(pid, None)
            _EXIT_CODES[pid] = proc.returncode


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    _reap()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _exit_text(pid: int | None) -> str:
    """How process ``pid`` ended, in words (its exit status or signal when this server started it)."""
    proc = _CHILDREN.get(pid) if pid else None
    if proc is not None:  # our child: its exit status is known once its last thread has gone
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
    _reap()
    code = _EXIT_CODES.get(pid) if pid else None
    if code is None:
        return "the training process is gone"
    if code < 0:
        try:
            return f"the training process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the training process was killed by signal {-code}"
    return f"the training process exited with status {code}"


def _cuda_devices() -> int:
    """How many CUDA devices this machine has (0 without torch, CUDA or a working driver)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no torch / broken driver: train on one process
        return 0
