"""Background training runs started from the browser: one subprocess per run, all state on disk.

A run is a directory under :func:`ssl_viz.paths.runs_dir` (unique name; its files are named in
:mod:`ssl_viz.rundir`). :func:`start_run` writes the run's ``config.json`` first and launches
``python -m ssl_viz train --config RUN/config.json --out RUN`` (under ``torchrun`` when several
GPUs), so every TrainConfig field reaches the run. Besides the Trainer's files (``config.json``,
``card.json``, ``checkpoint.safetensors``, ``trainer_state.pt``, ``metrics.jsonl``, ``status.json``)
this package keeps::

    job.json    how to start it (argv), the launched process group, queue time, cancel requests
    log.txt     stdout + stderr of the training process

``status.json`` is written by the Trainer (state, pid, heartbeat, progress); this
package writes it only while the Trainer is not there: ``queued`` (waiting for a
slot), ``starting`` (process launched, model not built yet), ``cancelled`` (a queued
run was cancelled) and ``crashed`` (the status said running but its process is gone).

No Streamlit here and no state in memory that matters: any process (two browser
sessions, a restarted server, the CLI) sees the same runs. A global limit
(``$SSL_VIZ_MAX_RUNS``, default 1) caps how many train at once; extra runs wait as
``queued`` and :func:`dispatch_queue` starts them when a slot frees. Every listing or
polling call dispatches, so the queue advances whenever any page looks.

Modules: :mod:`~ssl_viz.jobs.validate` (is a config trainable), :mod:`~ssl_viz.jobs.launch`
(queue and start), :mod:`~ssl_viz.jobs.status` (state from the files), :mod:`~ssl_viz.jobs.control`
(wait, cancel, resume, delete), :mod:`~ssl_viz.jobs.process` (the training processes),
:mod:`~ssl_viz.jobs.lock` (one lock per runs folder).

>>> run = start_run(TrainConfig(method="simclr", dataset="digits", encoder="small-cnn"))
>>> run_status(run).state        # queued -> starting -> running -> done
>>> cancel_run(run); resume_run(run); delete_run(run)
"""

from ssl_viz.jobs.control import cancel_run, delete_run, resume_run, wait_for
from ssl_viz.jobs.launch import config_command, dispatch_queue, list_runs, max_runs, new_run_dir, start_run, train_command
from ssl_viz.jobs.lock import LOCK
from ssl_viz.jobs.process import pid_alive
from ssl_viz.jobs.status import (
    ACTIVE,
    FINISHING,
    RESUMABLE,
    STALE_S,
    START_TIMEOUT_S,
    JobError,
    RunStatus,
    log_tail,
    run_config,
    run_status,
)
from ssl_viz.jobs.validate import ConfigError, validate_config

__all__ = [
    "ACTIVE", "ConfigError", "FINISHING", "JobError", "LOCK", "RESUMABLE", "RunStatus", "STALE_S", "START_TIMEOUT_S",
    "cancel_run", "config_command", "delete_run", "dispatch_queue", "list_runs", "log_tail", "max_runs", "new_run_dir",
    "pid_alive", "resume_run", "run_config", "run_status", "start_run", "train_command", "validate_config", "wait_for",
]
