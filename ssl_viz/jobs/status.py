"""What a run is doing, read from its files: its state, progress, process, and the crash and hang rules."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ssl_viz.jobs.process import _exit_text, pid_alive
from ssl_viz.rundir import CARD, CHECKPOINT, JOB, LOG, STATUS, read_config_dict, read_job, read_status, write_job, write_status

ACTIVE = ("queued", "starting", "running")       # states that hold (or wait for) a slot
RESUMABLE = ("cancelled", "crashed", "failed")
STALE_S = 60.0           # a running run without heartbeat for this long (+ its log interval) is crashed
START_TIMEOUT_S = 600.0  # a run stuck in "starting" this long without a live process is crashed
LOG_TAIL = 15
FINISHING = "finishing: final evaluation and checkpoint"


class JobError(RuntimeError):
    """A run cannot be started, cancelled, resumed or deleted; the message says why."""


@dataclass(frozen=True)
class RunStatus:
    """What a run is doing, read from its files (``run_status``)."""

    run_dir: Path
    state: str                     # queued/starting/running/done/cancelled/diverged/failed/crashed/unknown
    reason: str | None = None
    pid: int | None = None
    step: int = 0
    total_steps: int = 0           # under a time budget an estimate from the pace so far (total_estimated)
    total_estimated: bool = False
    progress: float = 0.0
    elapsed: float = 0.0           # seconds of training
    heartbeat: float | None = None
    device: str | None = None
    time_budget: float | None = None
    has_checkpoint: bool = False
    created: float = 0.0

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def resumable(self) -> bool:
        return self.state in RESUMABLE

    @property
    def total_text(self) -> str:
        """The total number of steps for display: ``"120"``, ``"~120"`` while estimated, ``"?"`` when unknown."""
        if not self.total_steps:
            return "?"
        return f"~{self.total_steps}" if self.total_estimated else str(self.total_steps)

    @property
    def eta_s(self) -> float | None:
        """Seconds of training left (None before the first step)."""
        if self.state != "running" or self.progress <= 0:
            return None
        if self.time_budget:
            return max(0.0, self.time_budget - self.elapsed)
        return max(0.0, self.elapsed / self.progress - self.elapsed)


# ---------------------------------------------------------------------------- the files this package writes


def _write_status(run_dir: Path, state: str, reason: str | None = None, **extra) -> None:
    """Replace ``status.json`` with ``state`` (keeping the Trainer's progress fields) while the Trainer is not there."""
    old = read_status(run_dir)
    keep = {k: old[k] for k in ("step", "total_steps", "total_steps_estimated", "progress", "elapsed", "device", "time_budget") if k in old}
    write_status(run_dir, {**keep, "state": state, "reason": reason, "heartbeat": time.time(), **extra})


def _update_job(run_dir: Path, **changes) -> dict:
    """Merge ``changes`` into ``job.json``; returns the new record."""
    job = {**read_job(run_dir), **changes}
    write_job(run_dir, job)
    return job


# ---------------------------------------------------------------------------- reading state


def _run_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and
            any((p / f).exists() for f in (STATUS, JOB, CARD))]


def log_tail(run_dir: str | Path, lines: int = LOG_TAIL) -> str:
    """The last ``lines`` lines of the run's ``log.txt`` ('' when there is none)."""
    path = Path(run_dir) / LOG
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    text = text.replace("\r", "\n")
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


def _stale_after(run_dir: Path, status: dict, job: dict) -> float:
    """Seconds without heartbeat after which a live "running" run counts as hung: ``$SSL_VIZ_STALE_S`` (60) plus two
    log intervals at the run's wall-clock pace (kNN monitor and checkpoints included); 5 minutes before the first step."""
    stale = float(os.environ.get("SSL_VIZ_STALE_S", STALE_S))
    step = int(status.get("step") or 0)
    if step == 0:
        return max(stale, 300.0)  # data loading, first kNN, torch.compile
    cfg = read_config_dict(run_dir) or {}
    wall = float(status.get("heartbeat") or 0) - float(job.get("launched_at") or status.get("heartbeat") or 0)
    per_step = max(wall, float(status.get("elapsed") or 0.0)) / step
    return stale + 2 * int(cfg.get("log_every", 10)) * per_step


def run_status(run_dir: str | Path) -> RunStatus:
    """The run's state from its files; a "running" run whose process died or stopped beating becomes "crashed".

    A dead process is recorded as crashed in ``status.json`` (reason: how it ended and the
    last lines of ``log.txt``); a live but silent one is only reported, as it may wake up.
    """
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    job = read_job(run_dir)
    state, reason = status.get("state"), status.get("reason")
    if state is None:
        state = "done" if (run_dir / CHECKPOINT).exists() else "unknown"
    pid = job.get("pgid") if state == "starting" else (status.get("pid") or job.get("pgid"))
    if state in ("starting", "running"):
        alive = pid_alive(pid) or (job.get("pgid") != pid and pid_alive(job.get("pgid")))
        if not alive:
            again = read_status(run_dir)
            if again.get("state") not in ("starting", "running"):  # it finished between the two reads
                return run_status(run_dir)
            if state == "starting" and not pid and time.time() - float(status.get("heartbeat") or 0) < 30:
                pass  # being launched right now
            else:
                if job.get("cancel_requested"):
                    state, reason = "cancelled", "cancelled before training wrote its final status"
                else:
                    tail = log_tail(run_dir)
                    state, reason = "crashed", _exit_text(pid) + (":\n" + tail if tail else " (log.txt is empty)")
                _write_status(run_dir, state, reason, pid=pid)
                status = read_status(run_dir) or status
        elif state == "running" and status.get("heartbeat") and time.time() - float(status["heartbeat"]) > _stale_after(run_dir, status, job):
            state = "crashed"
            reason = f"no heartbeat for {time.time() - float(status['heartbeat']):.0f} s although process {pid} lives (hung?)"
        elif state == "starting" and time.time() - float(job.get("launched_at") or status.get("heartbeat") or 0) > START_TIMEOUT_S:
            state, reason = "crashed", f"still starting after {START_TIMEOUT_S:.0f} s:\n" + log_tail(run_dir)
    elif state not in ACTIVE and state != "crashed" and job.get("pgid") and time.time() - float(status.get("heartbeat") or 0) < 300 \
            and pid_alive(job["pgid"]):
        # the Trainer writes its final state before the last kNN and checkpoint: trust it once the process has ended
        state, reason, pid = "running", f"{FINISHING} ({state})", job["pgid"]
    return RunStatus(
        run_dir=run_dir, state=state, reason=reason, pid=pid, step=int(status.get("step") or 0),
        total_steps=int(status.get("total_steps") or 0), total_estimated=bool(status.get("total_steps_estimated")),
        progress=float(status.get("progress") or 0.0),
        elapsed=float(status.get("elapsed") or 0.0), heartbeat=status.get("heartbeat"), device=status.get("device"),
        time_budget=status.get("time_budget"), has_checkpoint=(run_dir / CHECKPOINT).exists(),
        created=float(job.get("created") or _mtime(run_dir)),
    )


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def run_config(run_dir: str | Path) -> dict:
    """The run's TrainConfig as a dict (``config.json``, else the one it was queued with; {} when neither)."""
    return read_config_dict(run_dir) or {}
