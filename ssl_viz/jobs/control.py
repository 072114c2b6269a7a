"""Controlling runs: wait for one, cancel it (SIGTERM: the Trainer saves and stops), resume it, delete it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import time
from pathlib import Path

from ssl_viz.jobs.launch import dispatch_queue, train_command
from ssl_viz.jobs.lock import _locked
from ssl_viz.jobs.process import pid_alive
from ssl_viz.jobs.status import FINISHING, RESUMABLE, JobError, RunStatus, _update_job, _write_status, run_status
from ssl_viz.rundir import CONFIG, EVOLUTION, METRICS, is_resumable, is_run_dir, read_job


def _kill(status: RunStatus, sig: int) -> None:
    pgid = read_job(status.run_dir).get("pgid")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if pgid and pid_alive(pgid):
            os.killpg(pgid, sig)
        elif status.pid:
            os.kill(status.pid, sig)


def wait_for(run_dir: str | Path, states=("done", "cancelled", "diverged", "failed", "crashed"), timeout: float = 60.0,
             poll: float = 0.2) -> RunStatus:
    """Poll (and dispatch the queue) until the run reaches one of ``states`` or ``timeout`` seconds pass."""
    deadline = time.time() + timeout
    while True:
        dispatch_queue(Path(run_dir).parent)
        status = run_status(run_dir)
        if status.state in states or time.time() > deadline:
            return status
        time.sleep(poll)


def cancel_run(run_dir: str | Path, wait: float = 0.0) -> RunStatus:
    """Cancel a run: a queued one never starts; a running one gets SIGTERM (the Trainer saves and stops)."""
    run_dir = Path(run_dir)
    with _locked(run_dir.parent):
        status = run_status(run_dir)
        if status.state == "queued":
            _update_job(run_dir, pending_argv=None)
            _write_status(run_dir, "cancelled", "cancelled while queued")
            return run_status(run_dir)
        hung = status.state == "crashed" and pid_alive(status.pid)
        if (status.state not in ("starting", "running") and not hung) or str(status.reason).startswith(FINISHING):
            return status  # nothing to stop, or it is saving its final checkpoint: let it
        _update_job(run_dir, cancel_requested=time.time())
        _kill(status, signal.SIGTERM)
    return wait_for(run_dir, timeout=wait) if wait else run_status(run_dir)


def resume_run(run_dir: str | Path) -> RunStatus:
    """Queue a cancelled, crashed or failed run again with ``train --resume``: from its last checkpoint, or from
    step 0 with its ``config.json`` when it has none (killed before its first checkpoint); runs without a
    ``config.json`` (older ones) start afresh with the command they were first launched with.

    Raises :class:`JobError` for runs in other states, or with neither a checkpoint nor a recorded command.
    """
    run_dir = Path(run_dir)
    with _locked(run_dir.parent):
        status = run_status(run_dir)
        if status.state not in RESUMABLE:
            raise JobError(f"{run_dir.name} is {status.state}; only cancelled or crashed runs can be resumed")
        job = read_job(run_dir)
        if pid_alive(status.pid) or pid_alive(job.get("pgid")):  # a hung process must not write beside the new one
            _kill(status, signal.SIGKILL)
            for _ in range(50):
                if not (pid_alive(status.pid) or pid_alive(job.get("pgid"))):
                    break
                time.sleep(0.1)
        if is_resumable(run_dir) or (run_dir / CONFIG).exists():
            argv = train_command(["--resume", str(run_dir)], job.get("nproc"))
        elif job.get("argv"):
            argv = job["argv"]  # the first launch's command: train from config.json
            for name in (METRICS, EVOLUTION):
                (run_dir / name).unlink(missing_ok=True)
        else:
            raise JobError(f"{run_dir.name} has no checkpoint and no recorded command: nothing to resume")
        _update_job(run_dir, pending_argv=argv, queued_at=time.time(), cancel_requested=None)
        _write_status(run_dir, "queued", "resume")
    dispatch_queue(run_dir.parent)
    return run_status(run_dir)


def delete_run(run_dir: str | Path) -> None:
    """Remove a run directory; refuses runs that are starting or running (cancel them first). Raises :class:`JobError`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise JobError(f"no run at {run_dir}")
    if not is_run_dir(run_dir):
        raise JobError(f"{run_dir} does not look like a run directory; not deleting it")
    with _locked(run_dir.parent):
        status = run_status(run_dir)
        job = read_job(run_dir)
        hung = status.state == "crashed" and (pid_alive(status.pid) or pid_alive(job.get("pgid")))
        if status.state in ("starting", "running") or hung:
            raise JobError(f"{run_dir.name} is {status.state} and its process lives; cancel it before deleting it")
        trash = run_dir.parent / f".deleting-{run_dir.name}-{secrets.token_hex(2)}"
        os.replace(run_dir, trash)
    shutil.rmtree(trash, ignore_errors=True)
