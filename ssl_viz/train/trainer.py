"""The one training loop for every method (minGPT-style ``Trainer`` with callbacks).

Data live in memory as uint8 tensors; a batch is an index into them, moved to
the device and augmented there as a whole batch (``ssl_viz.augment``), so the
CPU never becomes the bottleneck on a GPU and no DataLoader workers are needed.

Each run writes to its directory (names in :mod:`ssl_viz.rundir`)::

    config.json  card.json  checkpoint.safetensors  trainer_state.pt
    metrics.jsonl   one JSON object per logged step (loss, lr, images/s, kNN, ...)
    status.json     state (running/done/cancelled/diverged/failed), pid, heartbeat, progress

Distributed: under ``torchrun --nproc_per_node=N -m ssl_viz train ...`` the
loop initialises the process group (NCCL on CUDA, gloo on the CPU), wraps the
method in DDP, shards every batch, and SimCLR/MoCo gather negatives across ranks.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ssl_viz.augment import MultiViewAugment, parse_policy
from ssl_viz.checkpoint import load_trainer_state, read_state_dict
from ssl_viz.config import TrainConfig
from ssl_viz.data import ImageDataset, load_dataset
from ssl_viz.device import configure_backend, init_distributed, pick_device
from ssl_viz.encoders import build_encoder
from ssl_viz.methods import SSLMethod, build_method
from ssl_viz.rundir import CHECKPOINT, truncate_metrics, write_config
from ssl_viz.train.base import Callback, TrainingError, TrainState, check_trainable
from ssl_viz.train.callbacks import default_callbacks
from ssl_viz.train.checkpoints import model_card, nonfinite_tensor, save_checked, snapshot, write_checkpoint
from ssl_viz.train.optim import build_optimizer
from ssl_viz.train.stop import StopControl, nonfinite_text

log = logging.getLogger(__name__)


def lr_factor(progress: float, warmup_fraction: float) -> float:
    """Linear warm-up then cosine decay to 0, as a function of training progress in [0, 1]."""
    if warmup_fraction > 0 and progress < warmup_fraction:
        return max(progress / warmup_fraction, 1e-3)
    rest = (progress - warmup_fraction) / max(1e-8, 1.0 - warmup_fraction)
    return 0.5 * (1.0 + math.cos(math.pi * min(max(rest, 0.0), 1.0)))


class Trainer:
    """Train ``method`` on ``data`` into ``run_dir``: the loop, the optimiser, DDP and the callbacks.

    The Trainer takes what it runs, as minGPT's does; :meth:`from_config` builds it all from a
    :class:`~ssl_viz.config.TrainConfig`::

        Trainer.from_config(TrainConfig(method="simclr", dataset="digits", epochs=1), "runs/x").fit()

    Args:
        method: the :class:`~ssl_viz.methods.SSLMethod` to train, on any device: the Trainer moves it to
            ``pick_device(cfg.device)`` (in ``channels_last`` when ``cfg.channels_last`` and the device is CUDA
            or the CPU), wraps it in DDP under ``torchrun`` and compiles it when ``cfg.compile``; ``self.method``
            stays the bare module.
        data: training images (uint8 ``[N, C, H, W]`` in memory, labels for the monitors).
        augment: batch views on the device: ``augment(x [B, C, H, W] float, generator=) -> method.num_views`` views.
        run_dir: where checkpoints, metrics and status go.
        cfg: the run's config: the loop reads batch size, epochs / time budget, optimiser, lr schedule, grad clip,
            AMP, seed; the card records method, encoder, dataset and augment names from it.
        callbacks: the loop's callbacks; None: :func:`~ssl_viz.train.callbacks.default_callbacks` of ``cfg``.
        test_data: held-out images for the kNN monitor and snapshots (None: the dataset's test split).
        command: the command line recorded in the model card.

    Randomness: batches come from a generator seeded with ``cfg.seed + step``, augmentations from
    ``self.generator`` and the method's draws (memory-bank negatives) from ``self.method_generator``, both
    seeded from ``cfg.seed`` and the rank; :meth:`from_config` seeds torch's global RNG with ``cfg.seed + rank``
    before it builds the method (the weights' initialisation).

    Stopping: every stop decision (time budget, divergence, cancel) is taken once per step and shared by all
    ranks (:class:`~ssl_viz.train.stop.StopControl`); :meth:`request_stop` (the SIGTERM handler) asks for one.

    Checkpoints: only weights that produced a finite loss are written. A checkpoint asked for after step ``s``
    (:meth:`request_checkpoint`, e.g. by the :class:`~ssl_viz.train.callbacks.Checkpointer`) is kept in memory and
    written during step ``s + 1``, once that step's loss, computed with exactly those weights, is finite; the
    final one (:meth:`save`) is written only when every parameter and buffer is finite and the weights embed a
    probe batch as finite numbers.

    Raises:
        TrainingError: an unknown ``cfg.optimizer``.
    """

    def __init__(self, method: SSLMethod, data: ImageDataset, augment, run_dir: str | Path, cfg: TrainConfig,
                 callbacks: list[Callback] | None = None, test_data: ImageDataset | None = None, command: str = "") -> None:
        self.cfg, self.run_dir, self.command = cfg, Path(run_dir), command
        group = init_distributed()
        self.distributed, self.rank, self.world = group.enabled, group.rank, group.world
        self.device = pick_device(cfg.device)
        configure_backend(self.device)
        self.data, self.test_data, self.augment = data, test_data, augment
        self.method = method.to(self.device)
        if cfg.channels_last and self.device.type in ("cuda", "cpu"):
            self.method.to(memory_format=torch.channels_last)
        self.model = self.method
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.method, device_ids=ids, find_unused_parameters=True)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = build_optimizer(cfg.optimizer, self.method.parameter_groups(cfg.weight_decay), cfg.lr, self.device)
        self.images = self.data.images.to(self.device) if self.device.type == "cuda" else self.data.images
        self.labels = self.data.labels.to(self.device)
        gen_device = self.device if self.device.type == "cuda" else "cpu"
        self.generator = torch.Generator(device=gen_device).manual_seed(self._seed())
        self.method_generator = torch.Generator(device=gen_device).manual_seed(self._seed(method=True))
        self.state = TrainState()
        self.metrics: dict[str, float] = {}
        self.callbacks = callbacks if callbacks is not None else default_callbacks(cfg, self.rank)
        self.steps_per_epoch = max(1, len(self.data) // (cfg.batch_size * self.world))
        self.state.total_steps = max(1, int(round(cfg.epochs * self.steps_per_epoch)))
        self.state.total_estimated = bool(cfg.time_budget)  # re-estimated from the pace after every step
        self.stop = StopControl(cfg.time_budget, self.distributed)
        self.running = False       # inside fit()'s loop: a SIGTERM then asks for a shared stop
        self._start: float | None = None
        self._pending: tuple | None = None   # a requested checkpoint, written once its weights give a finite loss
        self._failure: OSError | None = None  # a checkpoint write that failed (DDP: shared at the next step)

    @classmethod
    def from_config(cls, cfg: TrainConfig, run_dir: str | Path, callbacks: list[Callback] | None = None,
                    dataset: ImageDataset | None = None, test_dataset: ImageDataset | None = None, command: str = "") -> Trainer:
        """A Trainer for ``cfg``: joins the process group under ``torchrun``, seeds torch with ``cfg.seed + rank``,
        loads ``cfg.dataset`` at ``cfg.image_size`` (or takes ``dataset``; at most ``cfg.max_train_images`` of it),
        builds the encoder,
        the method and the augmentation. ``callbacks=None``: the default callbacks of ``cfg``."""
        rank = init_distributed().rank
        torch.manual_seed(cfg.seed + rank)
        data = dataset if dataset is not None else load_dataset(cfg.dataset, "train", label=cfg.dataset_label,
                                                                 image_size=cfg.image_size)
        if cfg.max_train_images:
            data = data.head(cfg.max_train_images, seed=cfg.seed)
        check_trainable(cfg, data)
        encoder = build_encoder(cfg.encoder, in_channels=data.channels, width=cfg.encoder_width)
        try:
            method = build_method(cfg.method, encoder, cfg.method_cfg, num_samples=len(data), num_classes=max(1, data.num_classes))
        except ValueError as exc:  # the method's own limits (sizes, names)
            raise TrainingError(f"cannot train {cfg.method} on {cfg.dataset}: {exc}") from exc
        if cfg.small_crops and not method.supports_small_crops:
            raise TrainingError(f"{cfg.method} trains on two views only; small crops (multi-crop) work with simclr and swav")
        augment = MultiViewAugment(parse_policy(cfg.augment), n_views=method.num_views, small_crops=cfg.small_crops,
                                   small_size=cfg.small_crop_size, small_scale=cfg.small_crop_scale)
        return cls(method, data, augment, run_dir, cfg, callbacks=callbacks, test_data=test_dataset, command=command)

    # ------------------------------------------------------------------ set-up
    def _seed(self, method: bool = False, step: int = 0) -> int:
        """Seeds of the augmentation generator (``seed * 1000 + rank``) and of the method's (500 further on)."""
        return self.cfg.seed * 1000 + (500 if method else 0) + self.rank + step

    def resume(self) -> bool:
        """Continue from the run directory's last checkpoint; False when there is none."""
        state = load_trainer_state(self.run_dir)
        if state is None or not (self.run_dir / CHECKPOINT).exists():
            return False
        self.method.load_state_dict(read_state_dict(self.run_dir / CHECKPOINT))
        self.optimizer.load_state_dict(state["optimizer"])
        s = state["loop"]
        self.state.step, self.state.elapsed, self.state.images_seen = int(s["step"]), float(s["elapsed"]), int(s["images_seen"])
        self.state.total_steps = int(s["total_steps"])
        self.stop.elapsed = self.state.elapsed
        self.generator.manual_seed(self._seed(step=self.state.step))
        self.method_generator.manual_seed(self._seed(method=True, step=self.state.step))
        return True

    # ------------------------------------------------------------------ loop
    def batches(self):
        """Endless stream of index batches ``[B]``: a fresh permutation per epoch, sharded by rank."""
        gen = torch.Generator().manual_seed(self.cfg.seed + self.state.step)
        per_rank = self.cfg.batch_size
        while True:
            perm = torch.randperm(len(self.data), generator=gen)
            perm = perm[: (len(perm) // (per_rank * self.world)) * per_rank * self.world]
            if len(perm) == 0:
                perm = torch.randint(len(self.data), (per_rank * self.world,), generator=gen)
            for start in range(0, len(perm), per_rank * self.world):
                chunk = perm[start:start + per_rank * self.world]
                yield chunk[self.rank::self.world]

    def progress(self) -> float:
        """Share of the run done, in [0, 1]: of the time budget by the clock all ranks share, else of the steps."""
        if self.cfg.time_budget:
            return self.stop.progress()
        return min(1.0, self.state.step / self.state.total_steps)

    def request_stop(self) -> None:
        """Stop (as cancelled) after the current step, on every rank; safe to call from a signal handler."""
        self.stop.request()

    def train_step(self, index: torch.Tensor) -> dict:
        """One optimiser step on the images ``index`` ``[B]``; returns the step's logs as floats (loss, lr, grad_norm, ...).

        Before the update every rank shares whether its loss and gradient norm are finite and its stop request
        (:meth:`StopControl.sync`); a checkpoint requested after the previous step is written here, its weights
        having just given a finite loss.

        Raises:
            FloatingPointError: the loss or gradient norm is not finite on some rank (checked before the update,
                on every rank at once, so the weights stay finite and no rank waits for another).
        """
        cfg = self.cfg
        x = self.images[index.to(self.images.device)].to(self.device, non_blocking=True).float().div_(255.0)
        if cfg.channels_last and self.device.type in ("cuda", "cpu"):
            x = x.contiguous(memory_format=torch.channels_last)
        views = self.augment(x, generator=self.generator)
        labels = self.labels[index.to(self.labels.device)]
        factor = lr_factor(self.progress(), cfg.warmup_fraction)
        for group in self.optimizer.param_groups:  # a group may scale the schedule (BYOL's predictor: "lr_scale")
            group["lr"] = cfg.lr * factor * group.get("lr_scale", 1.0)
        use_amp = cfg.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = self.forward(views, index.to(self.device), labels, generator=self.method_generator)
        loss = out.loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if hasattr(self.method, "before_optimizer_step"):
            self.method.before_optimizer_step(self.state.step)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.method.parameters(), cfg.grad_clip) if cfg.grad_clip else torch.zeros(())
        logs = out.floats(grad_norm=grad_norm)  # the step's one host synchronisation
        bad = next((k for k in ("loss", "grad_norm") if not math.isfinite(logs[k])), None)
        kept = nonfinite_tensor(self._pending[0]) if self._pending is not None else None  # e.g. a NaN BatchNorm statistic
        local = time.perf_counter() - self._start if self._start is not None else self.state.elapsed
        nonfinite = self.stop.sync(local, self.rank, bad is not None or kept is not None, self._failure is not None)
        if self.stop.failed:  # a checkpoint could not be written (rank 0): every rank stops as failed
            raise self._failure or OSError("writing a checkpoint failed on another process")
        if nonfinite:  # checked before the update, by every rank at once
            raise FloatingPointError(nonfinite_text(bad and logs[bad], bad, kept, self.state.step))
        if self._pending is not None:  # the weights of the requested checkpoint just gave a finite loss: write it
            self._write_pending()
        self.optimizer.step()
        self.method.on_step_end(out, self.state.step, self.state.total_steps)
        return {**logs, "lr": cfg.lr * factor}

    def fit(self, resume: bool = False) -> TrainState:
        """Run until the epoch or time budget is spent, the loss diverges or a stop is asked for; returns the final state.

        ``resume``: continue from the run directory's last checkpoint, or, when it has none yet (a run killed
        before its first checkpoint), from step 0 with the same config. ``config.json`` is written (atomically)
        before the first step. Whatever happens (an exception included, which is then re-raised) the callbacks'
        ``on_train_end`` run, so ``status.json`` ends in a final state, never "running".
        """
        if resume:
            if not self.resume():
                log.warning("%s has no checkpoint yet: training again from step 0 with its config.json", self.run_dir)
            if self.rank == 0:  # what a killed attempt logged past the checkpoint would mix with the new records
                truncate_metrics(self.run_dir, self.state.step)
        self.method.train()
        self._start = time.perf_counter() - self.state.elapsed
        self.stop.elapsed = self.state.elapsed
        error: BaseException | None = None
        self.running = True
        try:
            if self.rank == 0:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                write_config(self.run_dir, self.cfg)  # before the first step: a run killed at any moment can be resumed
            for cb in self.callbacks:
                cb.on_train_start(self)
            self._loop()
            if self._failure is not None:  # the last write failed and no later step shared it
                raise self._failure
            self.state.stop_reason = self.state.stop_reason or ("cancelled" if self.stop.reason == "cancelled" else "done")
        except FloatingPointError as exc:
            self.state.stop_reason = f"diverged: {exc}"
        except KeyboardInterrupt:
            self.state.stop_reason = "cancelled"
        except OSError as exc:  # disk full during a checkpoint: the previous checkpoint is intact
            self.state.stop_reason = f"failed: {exc.strerror or exc}"
        except Exception as exc:  # anything else: recorded as failed, then raised
            self.state.stop_reason, error = f"failed: {type(exc).__name__}: {exc}", exc
        self.running, self._pending = False, None  # a checkpoint whose weights never gave a finite loss is dropped
        if self.state.stop_reason == "done" and self.cfg.time_budget:
            self.state.total_steps, self.state.total_estimated = self.state.step, False
        self.method.eval()
        for cb in sorted(self.callbacks, key=lambda c: c.end_last):
            try:
                cb.on_train_end(self)
            except Exception as exc:  # noqa: BLE001 - the status writer (last) must still run
                if error is None:
                    self.state.stop_reason, error = f"failed: {type(exc).__name__}: {exc}", exc
        if error is not None:
            raise error
        if self.distributed:
            dist.barrier()
        return self.state

    def _loop(self) -> None:
        window_t, window_imgs = time.perf_counter(), 0
        for index in self.batches():
            if self._finished():
                break
            logs = self.train_step(index)
            self.state.step += 1
            self.state.images_seen += len(index) * self.world
            window_imgs += len(index) * self.world
            self.state.elapsed = time.perf_counter() - self._start
            if self.cfg.time_budget:  # the same estimate on every rank: it comes from the shared clock
                self.state.total_steps = self.stop.estimate_total(self.state.step)
            self.state.progress = self.progress()
            now = time.perf_counter()
            logs["images_per_s"] = window_imgs / max(now - window_t, 1e-9)
            if self.state.step % self.cfg.log_every == 0:
                window_t, window_imgs = now, 0
            self.state.last_logs = logs
            cb_start = time.perf_counter()
            for cb in self.callbacks:
                cb.on_step_end(self, logs)
            spent = time.perf_counter() - cb_start
            self._start += spent  # monitoring and checkpoints do not eat the training budget
            window_t += spent

    def _finished(self) -> bool:
        if self.stop.reason is not None:  # cancelled or out of time: decided by all ranks together
            return True
        if self.cfg.time_budget:
            return self.stop.elapsed >= self.cfg.time_budget
        return self.state.step >= self.state.total_steps

    # ------------------------------------------------------------------ saving
    def card(self) -> dict:
        """The model card: what was trained on what, how long, where, and the latest monitor results."""
        return model_card(self)

    def request_checkpoint(self) -> None:
        """Checkpoint the weights as they are now, once they have given a finite loss (during the next step; rank 0)."""
        if self.rank == 0:
            self._pending = snapshot(self)

    def _write_pending(self) -> None:
        """Write the requested checkpoint (not training time). A write error (disk full) stops a single process at
        once; under DDP it is kept and shared at the next step's sync, so every rank stops together."""
        pending, self._pending = self._pending, None
        t = time.perf_counter()
        try:
            write_checkpoint(self, *pending)
        except OSError as exc:
            if not self.distributed:
                raise
            self._failure = exc
        self._start += time.perf_counter() - t

    def save(self) -> None:
        """Write checkpoint, config, card and resumable state now (rank 0; atomic), if the weights are sound.

        Raises:
            FloatingPointError: a parameter or buffer holds NaN/inf, or the weights embed a probe batch of training
                images as NaN/inf (:func:`~ssl_viz.train.checkpoints.weights_problem`); nothing is written.
        """
        if self.rank == 0:
            save_checked(self)
