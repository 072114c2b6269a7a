"""Starting runs: queue a TrainConfig in a new run directory, launch ``python -m ssl_viz train --config`` when a slot frees."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ssl_viz import rundir
from ssl_viz.config import TrainConfig, to_dict
from ssl_viz.jobs.lock import _locked
from ssl_viz.jobs.process import _cuda_devices, _track, pid_alive
from ssl_viz.jobs.status import JobError, RunStatus, _run_dirs, _update_job, _write_status, run_status
from ssl_viz.jobs.validate import ConfigError, validate_config
from ssl_viz.paths import REPO_ROOT, runs_dir
from ssl_viz.rundir import CONFIG, LOG, read_job, write_config, write_job
from ssl_viz.safety import READ_ROOTS_ENV, read_roots


def max_runs() -> int:
    """How many runs may train at once (``$SSL_VIZ_MAX_RUNS``, default 1)."""
    try:
        return max(1, int(os.environ.get("SSL_VIZ_MAX_RUNS", "1")))
    except ValueError:
        return 1


def train_command(args: list[str], nproc: int | None = None) -> list[str]:
    """``python -m ssl_viz train ARGS --quiet`` (or under ``torchrun --nproc_per_node=N`` when several GPUs)."""
    if nproc is None:
        nproc = _cuda_devices()
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "ssl_viz", "train", *args, "--quiet"]
    return [sys.executable, "-m", "ssl_viz", "train", *args, "--quiet"]


def config_command(run_dir: Path, nproc: int | None = None) -> list[str]:
    """The command that trains the run in ``run_dir`` from its ``config.json`` (every TrainConfig field, not only flags)."""
    return train_command(["--config", str(run_dir / CONFIG), "--out", str(run_dir)], nproc)


def new_run_dir(cfg: TrainConfig, root: str | Path | None = None) -> Path:
    """Create a fresh, uniquely named run directory ``<method>-<encoder>-<dataset>-<time>-<hex>`` under ``root``
    (default :func:`~ssl_viz.paths.runs_dir`)."""
    return rundir.new_run_dir(cfg, Path(root) if root is not None else runs_dir())


def start_run(cfg: TrainConfig, root: str | Path | None = None, nproc: int | None = None) -> Path:
    """Queue a training run of ``cfg`` in a new run directory and start it when a slot is free; returns the directory.

    The directory gets ``cfg`` as its ``config.json`` and the process trains from that file, so
    every field of ``cfg`` is honoured. Raises :class:`JobError` when ``cfg`` names an unknown
    method, encoder, dataset or policy, or has a batch smaller than 2.
    """
    try:
        validate_config(cfg)
    except ConfigError as exc:
        raise JobError(str(exc)) from exc
    root = Path(root) if root is not None else runs_dir()
    run_dir = new_run_dir(cfg, root)
    write_config(run_dir, cfg)
    now, nproc = time.time(), _cuda_devices() if nproc is None else nproc
    argv = config_command(run_dir, nproc)
    write_job(run_dir, {"config": to_dict(cfg), "argv": argv, "pending_argv": argv, "created": now,
                        "queued_at": now, "attempts": 0, "nproc": nproc})
    _write_status(run_dir, "queued")
    dispatch_queue(root)
    return run_dir


def _launch(run_dir: Path, argv: list[str]) -> int:
    """Start ``argv`` in its own process group with its output in the run's ``log.txt``; returns its pid."""
    _update_job(run_dir, pid=None, pgid=None, launched_at=time.time())  # no stale pid while the new one is born
    _write_status(run_dir, "starting")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if read_roots() is not None:  # the server confines what folder datasets may read: so does the run it starts
        env[READ_ROOTS_ENV] = os.pathsep.join(str(r) for r in read_roots())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(run_dir / LOG, "ab") as log:
        log.write(f"$ {shlex.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    _track(proc)
    job = read_job(run_dir)
    _update_job(run_dir, pid=proc.pid, pgid=proc.pid, launched_at=time.time(), pending_argv=None, cancel_requested=None,
                attempts=int(job.get("attempts", 0)) + 1)
    _write_status(run_dir, "starting", pid=proc.pid)
    return proc.pid


def dispatch_queue(root: str | Path | None = None) -> list[Path]:
    """Start queued runs (oldest first) while fewer than :func:`max_runs` train; returns those started."""
    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    started = []
    with _locked(root):
        statuses = [run_status(d) for d in _run_dirs(root)]
        busy = sum(s.state in ("starting", "running") or (s.state == "crashed" and pid_alive(s.pid)) for s in statuses)  # hung ones too
        waiting = sorted((s for s in statuses if s.state == "queued"), key=lambda s: read_job(s.run_dir).get("queued_at", 0))
        for s in waiting[: max(0, max_runs() - busy)]:
            argv = read_job(s.run_dir).get("pending_argv")
            if not argv:
                _write_status(s.run_dir, "failed", "queued without a command to run")
                continue
            _launch(s.run_dir, argv)
            started.append(s.run_dir)
    return started


def list_runs(root: str | Path | None = None) -> list[RunStatus]:
    """Every run under ``root`` (default :func:`runs_dir`), newest first; advances the queue first."""
    root = Path(root) if root is not None else runs_dir()
    dispatch_queue(root)
    return sorted((run_status(d) for d in _run_dirs(root)), key=lambda s: s.created, reverse=True)
