"""Running a training from a config: :func:`train` (what ``python -m ssl_viz train`` calls) and :func:`load_config`."""

from __future__ import annotations

import signal
from pathlib import Path

from ssl_viz.config import TrainConfig
from ssl_viz.device import env_rank, shutdown_distributed
from ssl_viz.rundir import RunDirError, read_config
from ssl_viz.train.base import TrainingError, TrainState
from ssl_viz.train.callbacks import default_callbacks, mark_stopped
from ssl_viz.train.trainer import Trainer


def load_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig of a run directory (its ``config.json``).

    Raises:
        TrainingError: ``run_dir`` has no readable ``config.json``.
    """
    try:
        return read_config(run_dir)
    except RunDirError as exc:
        raise TrainingError(str(exc)) from exc


def _reason(exc: BaseException) -> str:
    """``failed: <message>`` for the errors that explain themselves, else with the exception's type."""
    if isinstance(exc, (TrainingError, ValueError)):
        return f"failed: {exc}"
    return f"failed: {type(exc).__name__}: {exc}"


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress_bar: bool = False, command: str = "") -> TrainState:
    """Train (or resume) a run with the default callbacks.

    SIGTERM cancels cleanly: during set-up at once, in the loop after the current step on every rank, keeping the
    last checkpoint. An exception during set-up or training leaves ``status.json`` (when the run directory exists)
    in a final state, "failed" with the reason (or "cancelled"), and is re-raised.
    """
    trainer: Trainer | None = None

    def on_term(signum, frame):
        if trainer is not None and trainer.running:
            trainer.request_stop()
        else:
            raise KeyboardInterrupt

    if hasattr(signal, "SIGTERM"):
        try:
            signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread
            pass
    try:
        trainer = Trainer.from_config(cfg, run_dir, callbacks=default_callbacks(cfg, env_rank(), progress_bar), command=command)
        state = trainer.fit(resume=resume)
    except BaseException as exc:
        if env_rank() == 0:
            cancelled = isinstance(exc, KeyboardInterrupt)
            mark_stopped(run_dir, "cancelled" if cancelled else "failed", "cancelled" if cancelled else _reason(exc))
        raise
    finally:
        if trainer is not None and trainer.distributed:
            shutdown_distributed()
    return state
