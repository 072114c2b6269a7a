"""Background training runs started from the browser: one subprocess per run, all state on disk.

A run is a directory under :func:`ssl_viz.paths.runs_dir` (unique name). Besides the
Trainer's files (``config.json``, ``card.json``, ``checkpoint.safetensors``,
``trainer_state.pt``, ``metrics.jsonl``, ``status.json``) this module keeps::

    job.json    how to start it (argv), the launched process group, queue time, cancel requests
    log.txt     stdout + stderr of the training process

``status.json`` is written by the Trainer (state, pid, heartbeat, progress); this
module writes it only while the Trainer is not there: ``queued`` (waiting for a
slot), ``starting`` (process launched, model not built yet), ``cancelled`` (a queued
run was cancelled) and ``crashed`` (the status said running but its process is gone).

No Streamlit here and no state in memory that matters: any process (two browser
sessions, a restarted server, the CLI) sees the same runs. A global limit
(``$SSL_VIZ_MAX_RUNS``, default 1) caps how many train at once; extra runs wait as
``queued`` and :func:`dispatch_queue` starts them when a slot frees. Every listing or
polling call dispatches, so the queue advances whenever any page looks.

>>> run = start_run(TrainConfig(method="simclr", dataset="digits", encoder="small-cnn"))
>>> run_status(run).state        # queued -> starting -> running -> done
>>> cancel_run(run); resume_run(run); delete_run(run)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ssl_viz.config import AugmentConfig, MethodConfig, TrainConfig, to_dict
from ssl_viz.fileio import atomic_write_json, read_json
from ssl_viz.paths import REPO_ROOT, runs_dir

JOB, LOG, STATUS, LOCK = "job.json", "log.txt", "status.json", ".jobs.lock"
CHECKPOINT, TRAINER_STATE, CARD, CONFIG, METRICS = "checkpoint.safetensors", "trainer_state.pt", "card.json", "config.json", "metrics.jsonl"
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
    total_steps: int = 0
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
    def eta_s(self) -> float | None:
        """Seconds of training left (None before the first step)."""
        if self.state != "running" or self.progress <= 0:
            return None
        if self.time_budget:
            return max(0.0, self.time_budget - self.elapsed)
        return max(0.0, self.elapsed / self.progress - self.elapsed)


# ---------------------------------------------------------------------------- commands


def max_runs() -> int:
    """How many runs may train at once (``$SSL_VIZ_MAX_RUNS``, default 1)."""
    try:
        return max(1, int(os.environ.get("SSL_VIZ_MAX_RUNS", "1")))
    except ValueError:
        return 1


def cli_args(cfg: TrainConfig) -> list[str]:
    """Flags of ``python -m ssl_viz train`` that rebuild ``cfg`` (only the non-default ones, plus the names).

    Raises JobError when ``cfg`` changes a field the command line has no flag for.
    """
    from ssl_viz.cli import METHOD_FLAGS, TRAIN_FLAGS

    base, mbase = TrainConfig(), MethodConfig()
    mcfg = cfg.method_cfg or mbase
    args = ["--method", cfg.method, "--encoder", cfg.encoder, "--dataset", cfg.dataset]
    covered, mcovered = {"method", "encoder", "dataset", "method_cfg"}, set()
    for table, obj, default, seen in ((TRAIN_FLAGS, cfg, base, covered), (METHOD_FLAGS, mcfg, mbase, mcovered)):
        for flag, (dest, _, _) in table.items():
            seen.add(dest)
            value = getattr(obj, dest)
            if dest not in ("method", "encoder", "dataset") and value != getattr(default, dest) and value is not None:
                args += [flag, repr(value) if isinstance(value, float) else str(value)]
    if cfg.amp != base.amp:
        args.append("--amp" if cfg.amp else "--no-amp")
    args += [f for f, on in (("--compile", cfg.compile), ("--channels-last", cfg.channels_last)) if on]
    covered |= {"amp", "compile", "channels_last"}
    lost = [f.name for f in fields(cfg) if f.name not in covered and getattr(cfg, f.name) != getattr(base, f.name)]
    lost += [f"method_cfg.{f.name}" for f in fields(mcfg) if f.name not in mcovered and getattr(mcfg, f.name) != getattr(mbase, f.name)]
    if lost:
        raise JobError(f"the train command has no flag for {', '.join(lost)}; keep their defaults")
    return args


def train_command(args: list[str], nproc: int | None = None) -> list[str]:
    """``python -m ssl_viz train ARGS`` (or under ``torchrun --nproc_per_node=N`` when several GPUs)."""
    if nproc is None:
        nproc = _cuda_devices()
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "ssl_viz", "train", *args, "--quiet"]
    return [sys.executable, "-m", "ssl_viz", "train", *args, "--quiet"]


def _cuda_devices() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no torch / broken driver: train on one process
        return 0


# ---------------------------------------------------------------------------- starting


def new_run_dir(cfg: TrainConfig, root: str | Path | None = None) -> Path:
    """Create a fresh, uniquely named run directory ``<method>-<encoder>-<dataset>-<time>-<hex>``."""
    root = Path(root) if root is not None else runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    data = cfg.dataset.replace(":", "_").replace("/", "_").replace(os.sep, "_")
    while True:
        path = root / f"{cfg.method}-{cfg.encoder}-{data}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def start_run(cfg: TrainConfig, root: str | Path | None = None, nproc: int | None = None) -> Path:
    """Queue a training run of ``cfg`` in a new run directory and start it when a slot is free; returns the directory."""
    from ssl_viz.cli import CliError, validate

    try:
        validate(cfg)
    except CliError as exc:
        raise JobError(str(exc)) from exc
    args = cli_args(cfg)
    root = Path(root) if root is not None else runs_dir()
    run_dir = new_run_dir(cfg, root)
    now, nproc = time.time(), _cuda_devices() if nproc is None else nproc
    argv = train_command([*args, "--out", str(run_dir)], nproc)
    atomic_write_json(run_dir / JOB, {"config": to_dict(cfg), "argv": argv, "pending_argv": argv, "created": now,
                                      "queued_at": now, "attempts": 0, "nproc": nproc})
    _write_status(run_dir, "queued")
    dispatch_queue(root)
    return run_dir


def _write_status(run_dir: Path, state: str, reason: str | None = None, **extra) -> None:
    old = read_json(run_dir / STATUS, {}) or {}
    keep = {k: old[k] for k in ("step", "total_steps", "progress", "elapsed", "device", "time_budget") if k in old}
    atomic_write_json(run_dir / STATUS, {**keep, "state": state, "reason": reason, "heartbeat": time.time(), **extra})


def _update_job(run_dir: Path, **changes) -> dict:
    job = {**(read_json(run_dir / JOB, {}) or {}), **changes}
    atomic_write_json(run_dir / JOB, job)
    return job


_CHILDREN: dict[int, subprocess.Popen] = {}   # processes this server started (reaped on every poll)
_EXIT_CODES: dict[int, int] = {}               # their exit statuses, once reaped


def _launch(run_dir: Path, argv: list[str]) -> int:
    _update_job(run_dir, pid=None, pgid=None, launched_at=time.time())  # no stale pid while the new one is born
    _write_status(run_dir, "starting")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(run_dir / LOG, "ab") as log:
        log.write(f"$ {shlex.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    _CHILDREN[proc.pid] = proc
    job = read_json(run_dir / JOB, {}) or {}
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
        waiting = sorted((s for s in statuses if s.state == "queued"), key=lambda s: (read_json(s.run_dir / JOB, {}) or {}).get("queued_at", 0))
        for s in waiting[: max(0, max_runs() - busy)]:
            argv = (read_json(s.run_dir / JOB, {}) or {}).get("pending_argv")
            if not argv:
                _write_status(s.run_dir, "failed", "queued without a command to run")
                continue
            _launch(s.run_dir, argv)
            started.append(s.run_dir)
    return started


# ---------------------------------------------------------------------------- reading state


def _run_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and
            any((p / f).exists() for f in (STATUS, JOB, CARD))]


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


def _exit_text(pid: int | None) -> str:
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


def _stale_after(run_dir: Path, status: dict, job: dict) -> float:
    """Seconds without heartbeat after which a live "running" run counts as hung: ``$SSL_VIZ_STALE_S`` (60) plus two
    log intervals at the run's wall-clock pace (kNN monitor and checkpoints included); 5 minutes before the first step."""
    stale = float(os.environ.get("SSL_VIZ_STALE_S", STALE_S))
    step = int(status.get("step") or 0)
    if step == 0:
        return max(stale, 300.0)  # data loading, first kNN, torch.compile
    cfg = read_json(run_dir / CONFIG) or job.get("config") or {}
    wall = float(status.get("heartbeat") or 0) - float(job.get("launched_at") or status.get("heartbeat") or 0)
    per_step = max(wall, float(status.get("elapsed") or 0.0)) / step
    return stale + 2 * int(cfg.get("log_every", 10)) * per_step


def run_status(run_dir: str | Path) -> RunStatus:
    """The run's state from its files; a "running" run whose process died or stopped beating becomes "crashed".

    A dead process is recorded as crashed in ``status.json`` (reason: how it ended and the
    last lines of ``log.txt``); a live but silent one is only reported, as it may wake up.
    """
    run_dir = Path(run_dir)
    status = read_json(run_dir / STATUS, {}) or {}
    job = read_json(run_dir / JOB, {}) or {}
    state, reason = status.get("state"), status.get("reason")
    if state is None:
        state = "done" if (run_dir / CHECKPOINT).exists() else "unknown"
    pid = job.get("pgid") if state == "starting" else (status.get("pid") or job.get("pgid"))
    if state in ("starting", "running"):
        alive = pid_alive(pid) or (job.get("pgid") != pid and pid_alive(job.get("pgid")))
        if not alive:
            again = read_json(run_dir / STATUS, {}) or {}
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
                status = read_json(run_dir / STATUS, {}) or status
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
        total_steps=int(status.get("total_steps") or 0), progress=float(status.get("progress") or 0.0),
        elapsed=float(status.get("elapsed") or 0.0), heartbeat=status.get("heartbeat"), device=status.get("device"),
        time_budget=status.get("time_budget"), has_checkpoint=(run_dir / CHECKPOINT).exists(),
        created=float(job.get("created") or _mtime(run_dir)),
    )


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def list_runs(root: str | Path | None = None) -> list[RunStatus]:
    """Every run under ``root`` (default :func:`runs_dir`), newest first; advances the queue first."""
    root = Path(root) if root is not None else runs_dir()
    dispatch_queue(root)
    return sorted((run_status(d) for d in _run_dirs(root)), key=lambda s: s.created, reverse=True)


def run_config(run_dir: str | Path) -> dict:
    """The run's TrainConfig as a dict (``config.json``, else the one it was queued with)."""
    run_dir = Path(run_dir)
    return read_json(run_dir / CONFIG) or (read_json(run_dir / JOB, {}) or {}).get("config") or {}


# ---------------------------------------------------------------------------- control


def _kill(status: RunStatus, sig: int) -> None:
    job = read_json(status.run_dir / JOB, {}) or {}
    pgid = job.get("pgid")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if pgid and pid_alive(pgid):
            os.killpg(pgid, sig)
        elif status.pid:
            os.kill(status.pid, sig)


def wait_for(run_dir: str | Path, states=("done", "cancelled", "diverged", "failed", "crashed"), timeout: float = 60.0,
             poll: float = 0.2) -> RunStatus:
    """Poll (and dispatch the queue) until the run reaches one of ``states`` or ``timeout`` passes."""
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
    """Queue a cancelled or crashed run again: from its last checkpoint (``--resume``), or afresh when it has none."""
    run_dir = Path(run_dir)
    with _locked(run_dir.parent):
        status = run_status(run_dir)
        if status.state not in RESUMABLE:
            raise JobError(f"{run_dir.name} is {status.state}; only cancelled or crashed runs can be resumed")
        job = read_json(run_dir / JOB, {}) or {}
        if pid_alive(status.pid) or pid_alive(job.get("pgid")):  # a hung process must not write beside the new one
            _kill(status, signal.SIGKILL)
            for _ in range(50):
                if not (pid_alive(status.pid) or pid_alive(job.get("pgid"))):
                    break
                time.sleep(0.1)
        if (run_dir / CHECKPOINT).exists() and (run_dir / TRAINER_STATE).exists():
            argv = train_command(["--resume", str(run_dir)], job.get("nproc"))
        elif job.get("argv"):
            argv = job["argv"]
            for name in (METRICS, "evolution.npz"):
                (run_dir / name).unlink(missing_ok=True)
        else:
            raise JobError(f"{run_dir.name} has no checkpoint and no recorded command: nothing to resume")
        _update_job(run_dir, pending_argv=argv, queued_at=time.time(), cancel_requested=None)
        _write_status(run_dir, "queued", "resume")
    dispatch_queue(run_dir.parent)
    return run_status(run_dir)


def delete_run(run_dir: str | Path) -> None:
    """Remove a run directory; refuses runs that are starting or running (cancel them first)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise JobError(f"no run at {run_dir}")
    if not any((run_dir / f).exists() for f in (STATUS, JOB, CARD, CONFIG)):
        raise JobError(f"{run_dir} does not look like a run directory; not deleting it")
    with _locked(run_dir.parent):
        status = run_status(run_dir)
        job = read_json(run_dir / JOB, {}) or {}
        hung = status.state == "crashed" and (pid_alive(status.pid) or pid_alive(job.get("pgid")))
        if status.state in ("starting", "running") or hung:
            raise JobError(f"{run_dir.name} is {status.state} and its process lives; cancel it before deleting it")
        trash = run_dir.parent / f".deleting-{run_dir.name}-{secrets.token_hex(2)}"
        os.replace(run_dir, trash)
    shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------------------- locking

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


# ---------------------------------------------------------------------------- the Train page's augmentation knobs

# knob -> (field it sets, slider label, min, max, step, value of the field when off)
AUGMENT_KNOBS: dict[str, tuple[str, str, float, float, float, object]] = {
    "crop": ("crop_scale", "min crop area", 0.05, 1.0, 0.05, (1.0, 1.0)),
    "flip": ("flip_p", "p", 0.0, 1.0, 0.05, 0.0),
    "rotation": ("rotation_degrees", "max degrees", 0.0, 180.0, 5.0, 0.0),
    "rotate90": ("rotate90_p", "p", 0.0, 1.0, 0.05, 0.0),
    "color jitter": ("jitter_strength", "strength s", 0.1, 2.0, 0.1, None),
    "grayscale": ("grayscale_p", "p", 0.0, 1.0, 0.05, 0.0),
    "blur": ("blur_p", "p", 0.0, 1.0, 0.05, 0.0),
    "solarize": ("solarize_p", "p", 0.0, 1.0, 0.05, 0.0),
    "jigsaw": ("jigsaw_grid", "grid", 2, 4, 1, 0),
    "cutout": ("cutout_p", "p", 0.0, 1.0, 0.05, 0.0),
}


def knobs_from_policy(cfg: AugmentConfig) -> dict[str, tuple[bool, float]]:
    """Each knob's (on, strength) in policy ``cfg``."""
    out = {}
    for knob, (name, _, _lo, hi, _, off) in AUGMENT_KNOBS.items():
        value = getattr(cfg, name)
        if knob == "crop":
            out[knob] = (value[0] < 1.0, float(value[0]) if value[0] < 1.0 else 0.2)
        elif knob == "color jitter":
            out[knob] = (cfg.jitter_p > 0, float(value))
        elif knob == "jigsaw":
            out[knob] = (cfg.jigsaw_grid > 0 and cfg.jigsaw_p > 0, float(value or 2))
        else:
            default = getattr(AugmentConfig(), name) or (0.5 if hi <= 1.0 else 30.0)
            out[knob] = (value != off, float(value if value != off else default))
    return out


def policy_from_knobs(base: AugmentConfig, knobs: dict[str, tuple[bool, float]]) -> AugmentConfig:
    """``base`` with each knob set on (to its strength) or off; unnamed knobs keep ``base``'s values."""
    changes: dict[str, object] = {}
    for knob, (on, value) in knobs.items():
        name, off = AUGMENT_KNOBS[knob][0], AUGMENT_KNOBS[knob][5]
        if knob == "crop":
            hi = base.crop_scale[1] if base.crop_scale[0] < 1.0 else 1.0
            changes[name] = (min(float(value), hi), hi) if on else off
        elif knob == "color jitter":
            changes.update(jitter_strength=float(value), jitter_p=(base.jitter_p or 0.8) if on else 0.0)
        elif knob == "jigsaw":
            changes.update(jigsaw_grid=int(value) if on else 0, jigsaw_p=(base.jigsaw_p or 0.5) if on else 0.0)
        else:
            changes[name] = float(value) if on else off
    return replace(base, **changes)


__all__ = [
    "ACTIVE", "AUGMENT_KNOBS", "JobError", "RESUMABLE", "RunStatus", "cancel_run", "cli_args", "delete_run", "dispatch_queue",
    "knobs_from_policy", "list_runs", "log_tail", "max_runs", "new_run_dir", "pid_alive", "policy_from_knobs", "resume_run",
    "run_config", "run_status", "start_run", "train_command", "wait_for",
]
