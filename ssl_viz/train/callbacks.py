"""The loop's callbacks: metrics and status files, the kNN monitor, checkpoints, a progress bar, embedding snapshots.

Each reads the :class:`~ssl_viz.train.base.TrainerView` it is given and writes the run's files
through :mod:`ssl_viz.rundir`; none of them knows about Streamlit.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ssl_viz.config import TrainConfig
from ssl_viz.data import DatasetError, ImageDataset, load_dataset
from ssl_viz.device import device_name
from ssl_viz.evaluate import alignment, embed_dataset, knn_accuracy, pixel_knn_accuracy, uniformity
from ssl_viz.rundir import CHECKPOINT, append_metrics, read_evolution, read_status, write_evolution, write_status
from ssl_viz.train.base import Callback, TrainerView


def status_record(trainer: TrainerView, state: str, reason: str | None = None) -> dict:
    """The ``status.json`` record of ``trainer`` now: ``state`` (running/done/cancelled/diverged/failed), why,
    this process's pid, a heartbeat (Unix seconds), step / total_steps, progress in [0, 1], elapsed seconds, device.

    Under a time budget ``total_steps`` is estimated from the pace so far (``total_steps_estimated`` true) until
    the run is done, and ``progress`` is the share of the budget spent."""
    s = trainer.state
    return {
        "state": state, "reason": reason, "pid": os.getpid(), "heartbeat": time.time(), "step": s.step,
        "total_steps": max(s.total_steps, s.step), "total_steps_estimated": bool(s.total_estimated), "progress": s.progress,
        "elapsed": s.elapsed, "device": device_name(trainer.device), "time_budget": trainer.cfg.time_budget,
    }


FINAL_STATES = ("done", "cancelled", "diverged", "failed", "crashed")


def mark_stopped(run_dir, state: str, reason: str) -> None:
    """Put ``status.json`` of ``run_dir`` in the final ``state`` with ``reason`` unless it is in a final state already
    (keeping its progress fields); nothing when the folder does not exist. For errors raised before or around the loop."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    old = read_status(run_dir)
    if old.get("state") in FINAL_STATES:
        return
    keep = {k: old[k] for k in ("step", "total_steps", "progress", "elapsed", "device", "time_budget") if k in old}
    write_status(run_dir, {**keep, "state": state, "reason": reason, "pid": os.getpid(), "heartbeat": time.time()})


class MetricsLog(Callback):
    """Append logs to ``metrics.jsonl`` every ``every`` steps and keep ``status.json`` fresh.

    Its final status is written last, so "done" means the checkpoint is on disk.
    """

    end_last = True

    def __init__(self, every: int = 10) -> None:
        self.every = every

    def on_train_start(self, trainer: TrainerView) -> None:
        trainer.run_dir.mkdir(parents=True, exist_ok=True)
        write_status(trainer.run_dir, status_record(trainer, "running"))

    def on_step_end(self, trainer: TrainerView, logs: dict) -> None:
        s = trainer.state
        if s.step % self.every == 0 or s.step == 1:
            append_metrics(trainer.run_dir, {"step": s.step, "time": round(s.elapsed, 3), "epoch": s.step / trainer.steps_per_epoch,
                                             "progress": round(s.progress, 4), **logs})
            write_status(trainer.run_dir, status_record(trainer, "running"))

    def on_train_end(self, trainer: TrainerView) -> None:
        reason = trainer.state.stop_reason or "done"
        write_status(trainer.run_dir, status_record(trainer, reason.split(":")[0], reason=reason))


def held_out(trainer: TrainerView, what: str) -> ImageDataset | None:
    """The labelled test images of the run (``trainer.test_data`` or the dataset's test split), or None with a note
    on stderr when there are none (e.g. a folder with one image per class: every image goes to training)."""
    if trainer.test_data is not None:
        return trainer.test_data
    try:
        return load_dataset(trainer.cfg.dataset, "test", label=trainer.cfg.dataset_label, image_size=trainer.cfg.image_size)
    except DatasetError as exc:
        print(f"note: {what} is off: {exc}", file=sys.stderr)
        return None


class KnnMonitor(Callback):
    """Every ``every`` steps, and with ``every_s`` also every ``every_s`` seconds: weighted kNN top-1 (``KNN_K`` = 200
    neighbours, ``KNN_TEMPERATURE`` = 0.1; the protocol of :mod:`ssl_viz.evaluate`) and alignment/uniformity on
    held-out images.

    ``samples`` test images against a bank of twice as many training images; with
    ``samples=0`` (or at least the test set's size) the full protocol: the whole test
    set against the whole training set, as the time-to-quality curves need. With ``every=0`` and ``every_s=0`` it is
    off and loads nothing; without labels or test images it turns itself off (a note on stderr). Results of
    weights that embed as NaN/inf are not recorded.

    The time cadence gives a short run a curve from its first seconds: a measurement is due once ``every_s`` seconds
    have passed since the last one, and never sooner than four times what the last one took, so the monitor costs at
    most a fifth of the run's time. A run that starts from step 0 (unless ``samples=0`` asks for the full protocol)
    first records its two yardsticks under the monitor's protocol, at step 0: ``knn_untrained`` (the encoder before any step, also its first ``knn_top1``) and
    ``knn_raw_pixels`` (:func:`~ssl_viz.evaluate.pixel_knn_accuracy`); the live chart draws them as reference lines.
    """

    def __init__(self, every: int, samples: int = 2000, every_s: float = 0.0) -> None:
        self.every, self.samples, self.every_s = every, samples, float(every_s or 0.0)
        self.test = None
        self._last_time, self._cost, self._recorded_step = 0.0, 0.0, -1

    def on_train_start(self, trainer: TrainerView) -> None:
        self.test = None
        if (self.every or self.every_s) and trainer.rank == 0 and trainer.data.has_labels:
            test = held_out(trainer, "the kNN monitor")
            if test is None or not test.has_labels:
                return
            full = not self.samples or self.samples >= len(test)
            self.test = test if full else test.head(self.samples, seed=1)
            self.bank = trainer.data if full else trainer.data.head(self.samples * 2, seed=2)
            self._last_time, self._cost = trainer.state.elapsed, 0.0
            if trainer.state.step == 0 and self.samples:  # an explicit full protocol (samples=0: benchmarks) keeps its time
                self._record(trainer, yardsticks=True)

    def measure(self, trainer: TrainerView) -> dict | None:
        method = trainer.method
        was_training = method.training
        method.eval()
        with torch.inference_mode():
            embed = lambda x: method.encoder(x)  # noqa: E731
            bank = embed_dataset(embed, self.bank.images, device=trainer.device)
            test = embed_dataset(embed, self.test.images, device=trainer.device)
            if not (torch.isfinite(bank).all() and torch.isfinite(test).all()):
                method.train(was_training)
                return None
            x = self.test.float_images(slice(0, 512)).to(trainer.device)
            gen = torch.Generator(device=trainer.generator.device).manual_seed(123)
            v1, v2 = trainer.augment(x, generator=gen)[:2]
            z1, z2 = F.normalize(method.encoder(v1).float(), dim=1), F.normalize(method.encoder(v2).float(), dim=1)
        method.train(was_training)
        return {"knn_top1": knn_accuracy(bank, self.bank.labels, test, self.test.labels), "knn_n_test": len(self.test), "knn_n_bank": len(self.bank),
                "alignment": alignment(z1, z2), "uniformity": uniformity(test)}

    def _due(self, trainer: TrainerView) -> bool:
        if self.every and trainer.state.step % self.every == 0:
            return True
        return bool(self.every_s) and trainer.state.elapsed - self._last_time >= max(self.every_s, 4.0 * self._cost)

    def on_step_end(self, trainer: TrainerView, logs: dict) -> None:
        if self.test is not None and trainer.rank == 0 and self._due(trainer):
            self._record(trainer)

    def on_train_end(self, trainer: TrainerView) -> None:
        if self.test is not None and trainer.rank == 0 and trainer.state.step > 0 and not str(trainer.state.stop_reason).startswith(("diverged", "failed")) \
                and self._recorded_step != trainer.state.step:  # the last step's own measurement is the end's
            self._record(trainer)

    def _record(self, trainer: TrainerView, yardsticks: bool = False) -> None:
        """Measure now and append the record; with ``yardsticks`` (step 0) also raw pixels' kNN and, as
        ``knn_untrained``, this (untrained) encoder's."""
        extra = {}
        if yardsticks:
            extra["knn_raw_pixels"] = pixel_knn_accuracy(self.bank.images, self.bank.labels, self.test.images, self.test.labels)
        start = time.perf_counter()
        result = self.measure(trainer)
        self._cost, self._last_time = time.perf_counter() - start, trainer.state.elapsed
        if result is None:
            if extra:
                append_metrics(trainer.run_dir, {"step": trainer.state.step, "time": round(trainer.state.elapsed, 3), **extra})
            return
        self._recorded_step = trainer.state.step
        if yardsticks:
            extra["knn_untrained"] = result["knn_top1"]
        trainer.metrics.update(result)
        append_metrics(trainer.run_dir, {"step": trainer.state.step, "time": round(trainer.state.elapsed, 3), **result, **extra})


class Checkpointer(Callback):
    """Checkpoint the starting weights, then every ``every_seconds``, and at the end (not after divergence or a
    failure: the last good one stays).

    Only weights that produced a finite loss are written: a checkpoint asked for after a step is written during
    the next one, once its loss is finite (:meth:`Trainer.request_checkpoint`); the final one only if the weights
    are finite and embed finite numbers (:meth:`Trainer.save`; when they do not, the run ends as diverged).
    A fresh run's starting weights are checkpointed this way too, so even a run killed in its first seconds or
    diverged at its first update has a checkpoint that loads.
    """

    def __init__(self, every_seconds: float) -> None:
        self.every, self.last = every_seconds, 0.0

    def on_train_start(self, trainer: TrainerView) -> None:
        self.last = trainer.state.elapsed
        if trainer.state.step == 0 and not (trainer.run_dir / CHECKPOINT).exists():
            trainer.request_checkpoint()

    def on_step_end(self, trainer: TrainerView, logs: dict) -> None:
        if trainer.state.elapsed - self.last >= self.every:
            trainer.request_checkpoint()
            self.last = trainer.state.elapsed

    def on_train_end(self, trainer: TrainerView) -> None:
        if not str(trainer.state.stop_reason).startswith(("diverged", "failed")) and trainer.state.step > 0:
            try:
                trainer.save()
            except FloatingPointError as exc:
                trainer.state.stop_reason = f"diverged: {exc}"


class ProgressBar(Callback):
    """A one-line progress bar on stderr (CLI)."""

    def __init__(self, every: int = 10) -> None:
        self.every = every

    def on_step_end(self, trainer: TrainerView, logs: dict) -> None:
        s = trainer.state
        if s.step % self.every and s.progress < 1.0:
            return
        p = s.progress
        eta = s.elapsed / p - s.elapsed if p > 0 else float("nan")
        bar = "#" * int(30 * p) + "-" * (30 - int(30 * p))
        knn = trainer.metrics.get("knn_top1")
        extra = f" knn {knn:.3f}" if knn is not None else ""
        print(f"\r[{bar}] {p:5.1%} step {s.step} loss {logs['loss']:.4f} {logs['images_per_s']:.0f} img/s eta {eta:4.0f}s{extra}   ",
              end="", flush=True, file=sys.stderr)

    def on_train_end(self, trainer: TrainerView) -> None:
        print(file=sys.stderr)


class EvolutionRecorder(Callback):
    """Every ``every`` steps (and at the start and end): L2-normalised backbone embeddings of a fixed sample of
    ``samples`` labelled test images, appended to ``RUN_DIR/evolution.npz`` (float16; atomic rewrite).

    Arrays: ``steps [T]``, ``embeddings [T, N, D]``, ``labels [N]``, ``class_names [C]``. Beyond
    ``max_snapshots`` every other snapshot is dropped (first and last kept). A resumed run keeps the
    snapshots up to its checkpoint's step. The Runs page reads them with
    :func:`ssl_viz.analysis.runs.load_evolution`.
    """

    def __init__(self, every: int, samples: int = 500, max_snapshots: int = 60) -> None:
        self.every, self.samples, self.max_snapshots = every, samples, max_snapshots
        self.test = None

    def on_train_start(self, trainer: TrainerView) -> None:
        self.test = None
        if not self.every or trainer.rank != 0 or not trainer.data.has_labels:
            return
        test = held_out(trainer, "the embedding snapshots")
        if test is None or not test.has_labels or len(test) < 4:  # fewer points than any map of them needs
            return
        self.test = test.head(self.samples, seed=3)
        old = read_evolution(trainer.run_dir)
        keep = [i for i, s in enumerate(old["steps"]) if s <= trainer.state.step] if old is not None else []
        self.steps = [int(old["steps"][i]) for i in keep] if keep else []
        self.embeddings = [old["embeddings"][i] for i in keep] if keep else []
        if trainer.state.step not in self.steps:
            self.snapshot(trainer)

    def on_step_end(self, trainer: TrainerView, logs: dict) -> None:
        if self.test is not None and trainer.state.step % self.every == 0:
            self.snapshot(trainer)

    def on_train_end(self, trainer: TrainerView) -> None:
        if self.test is not None and not str(trainer.state.stop_reason).startswith(("diverged", "failed")) and trainer.state.step not in self.steps:
            self.snapshot(trainer)

    def snapshot(self, trainer: TrainerView) -> None:
        method = trainer.method
        was_training = method.training
        method.eval()
        with torch.inference_mode():
            z = F.normalize(embed_dataset(method.encoder, self.test.images, device=trainer.device), dim=1)
        method.train(was_training)
        if not torch.isfinite(z).all():  # poisoned weights: no snapshot (the run stops as diverged)
            return
        self.steps.append(int(trainer.state.step))
        self.embeddings.append(z.numpy().astype(np.float16))
        if len(self.steps) > self.max_snapshots:
            keep = sorted(set(range(0, len(self.steps) - 1, 2)) | {len(self.steps) - 1})
            self.steps, self.embeddings = [self.steps[i] for i in keep], [self.embeddings[i] for i in keep]
        write_evolution(trainer.run_dir, {"steps": np.asarray(self.steps, dtype=np.int64), "embeddings": np.stack(self.embeddings),
                                          "labels": self.test.labels.numpy(), "class_names": np.asarray(self.test.class_names, dtype=str)})


def default_callbacks(cfg: TrainConfig, rank: int = 0, progress_bar: bool = False) -> list[Callback]:
    """The callbacks of a run: metrics/status, kNN monitor, checkpoints and embedding snapshots on rank 0
    (plus a progress bar for the CLI); none on other ranks."""
    if rank != 0:
        return []
    cbs: list[Callback] = [MetricsLog(cfg.log_every), KnnMonitor(cfg.knn_every, cfg.knn_samples, cfg.knn_every_s), Checkpointer(cfg.checkpoint_every),
                           EvolutionRecorder(cfg.knn_every)]
    if progress_bar:
        cbs.append(ProgressBar(cfg.log_every))
    return cbs
