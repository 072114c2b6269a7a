"""The layout of a run directory: every file name, and the readers and writers of its small files.

The one module that knows what a run directory holds::

    config.json             the run's TrainConfig (written before the first step)
    card.json               model card: method, encoder, data, steps, seconds, metrics, versions
    checkpoint.safetensors  method weights (encoder, heads, training-only state)
    trainer_state.pt        optimiser and loop counters, for resuming
    metrics.jsonl           one JSON object per logged step (loss, lr, images/s, kNN, ...)
    status.json             state (queued/starting/running/done/cancelled/diverged/failed/crashed), pid, heartbeat, progress
    evolution.npz           embedding snapshots of a fixed sample over training (Runs page)
    job.json                background runs only: how it was launched, its process group, queue time
    log.txt                 background runs only: stdout + stderr of the training process

Every JSON file is written atomically (:mod:`ssl_viz.fileio`); ``metrics.jsonl`` is appended
line by line and its reader skips a torn last line.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from ssl_viz.config import TrainConfig, from_dict, to_dict
from ssl_viz.fileio import atomic_write, atomic_write_json, read_json

CONFIG = "config.json"
CARD = "card.json"
CHECKPOINT = "checkpoint.safetensors"
TRAINER_STATE = "trainer_state.pt"
METRICS = "metrics.jsonl"
STATUS = "status.json"
EVOLUTION = "evolution.npz"
JOB = "job.json"
LOG = "log.txt"
RUN_FILES = (CONFIG, CARD, CHECKPOINT, TRAINER_STATE, METRICS, STATUS, EVOLUTION, JOB, LOG)


class RunDirError(ValueError):
    """A folder is not the run directory it is expected to be; the message says why."""


def run_name(cfg: TrainConfig) -> str:
    """``<method>-<encoder>-<dataset>-<YYYYmmdd-HHMMSS>`` with path separators in the dataset name made safe."""
    data = cfg.dataset.replace(":", "_").replace("/", "_").replace(os.sep, "_")
    return f"{cfg.method}-{cfg.encoder}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run_dir(cfg: TrainConfig, root: str | Path) -> Path:
    """Create a fresh, uniquely named run directory ``root/<run_name>-<hex>`` (never an existing one)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = root / f"{run_name(cfg)}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding at least one of a run's own files (status, job, card or config)."""
    path = Path(path)
    return path.is_dir() and any((path / f).exists() for f in (STATUS, JOB, CARD, CONFIG))


# ---------------------------------------------------------------------------- config


def write_config(run_dir: str | Path, cfg: TrainConfig) -> None:
    """Atomically write ``cfg`` as the run's ``config.json``."""
    atomic_write_json(Path(run_dir) / CONFIG, to_dict(cfg))


def read_config_dict(run_dir: str | Path) -> dict | None:
    """The run's ``config.json`` as a dict, else the config it was queued with (``job.json``), else None."""
    run_dir = Path(run_dir)
    data = read_json(run_dir / CONFIG)
    if isinstance(data, dict):
        return data
    job = read_json(run_dir / JOB, {}) or {}
    return job.get("config") if isinstance(job.get("config"), dict) else None


def read_config(run_dir: str | Path) -> TrainConfig:
    """The run's TrainConfig from ``config.json``; raises :class:`RunDirError` when there is none."""
    data = read_json(Path(run_dir) / CONFIG)
    if not isinstance(data, dict):
        raise RunDirError(f"{run_dir} has no {CONFIG}: not a run directory")
    return from_dict(TrainConfig, data)


# ---------------------------------------------------------------------------- status, job, card


def read_status(run_dir: str | Path) -> dict:
    """``status.json`` as a dict ({} when missing or unreadable)."""
    data = read_json(Path(run_dir) / STATUS, {})
    return data if isinstance(data, dict) else {}


def write_status(run_dir: str | Path, record: dict) -> None:
    """Atomically replace ``status.json`` with ``record``."""
    atomic_write_json(Path(run_dir) / STATUS, record)


def read_job(run_dir: str | Path) -> dict:
    """``job.json`` as a dict ({} for runs not started from the browser)."""
    data = read_json(Path(run_dir) / JOB, {})
    return data if isinstance(data, dict) else {}


def write_job(run_dir: str | Path, job: dict) -> None:
    """Atomically replace ``job.json``."""
    atomic_write_json(Path(run_dir) / JOB, job)


def read_card(run_dir: str | Path) -> dict | None:
    """``card.json`` as a dict, or None."""
    data = read_json(Path(run_dir) / CARD)
    return data if isinstance(data, dict) else None


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT).exists()


def is_resumable(run_dir: str | Path) -> bool:
    """Whether the run has both a checkpoint and the trainer state to continue from it."""
    return (Path(run_dir) / CHECKPOINT).exists() and (Path(run_dir) / TRAINER_STATE).exists()


# ---------------------------------------------------------------------------- metrics


def append_metrics(run_dir: str | Path, record: dict) -> None:
    """Append one JSON line to ``metrics.jsonl`` (creating the folder) and flush it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / METRICS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All complete records of ``metrics.jsonl`` (a torn last line is skipped; [] when there is none)."""
    path = Path(run_dir) / METRICS
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Keep the records of ``metrics.jsonl`` up to ``step`` only (atomically): a resumed run drops what a killed
    attempt logged after the checkpoint it resumes from, so the file keeps one history."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return
    kept = [r for r in read_metrics(run_dir) if not isinstance(r.get("step"), (int, float)) or r["step"] <= step]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8"))


# ---------------------------------------------------------------------------- evolution snapshots


EVOLUTION_ARRAYS = ("steps", "embeddings", "labels", "class_names")


def read_evolution(run_dir: str | Path) -> dict | None:
    """The arrays of ``evolution.npz``: ``steps [T]``, ``embeddings [T, N, D]`` (as stored, float16),
    ``labels [N]``, ``class_names [C]``; None when the file is missing or unreadable."""
    import numpy as np

    try:
        with np.load(Path(run_dir) / EVOLUTION, allow_pickle=False) as data:
            return {name: data[name] for name in EVOLUTION_ARRAYS}
    except (OSError, KeyError, ValueError):
        return None


def write_evolution(run_dir: str | Path, arrays: dict) -> None:
    """Atomically replace ``evolution.npz`` with ``arrays`` (numpy arrays by name, see :func:`read_evolution`)."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(Path(run_dir) / EVOLUTION, write)
