"""The one training loop for every method (minGPT-style ``Trainer`` with callbacks).

Data live in memory as uint8 tensors; a batch is an index into them, moved to
the device and augmented there as a whole batch (``ssl_viz.augment``), so the
CPU never becomes the bottleneck on a GPU and no DataLoader workers are needed.

Each run writes to its directory::

    config.json  card.json  checkpoint.safetensors  trainer_state.pt
    metrics.jsonl   one JSON object per logged step (loss, lr, images/s, kNN, ...)
    status.json     state (running/done/cancelled/diverged/failed), pid, heartbeat, progress

Distributed: under ``torchrun --nproc_per_node=N -m ssl_viz train ...`` the
loop initialises the process group (NCCL on CUDA, gloo on the CPU), wraps the
method in DDP, shards every batch, and SimCLR/MoCo gather negatives across ranks.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ssl_viz.checkpoint import CHECKPOINT, load_trainer_state, read_state_dict, save_run
from ssl_viz.config import TrainConfig, from_dict
from ssl_viz.data import ImageDataset, load_dataset
from ssl_viz.encoders import build_encoder
from ssl_viz.evaluate import alignment, embed_dataset, knn_accuracy, uniformity
from ssl_viz.fileio import atomic_write_json, read_json
from ssl_viz.methods import build_method

STATUS = "status.json"
METRICS = "metrics.jsonl"


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says why."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def configure_backend(device: torch.device) -> None:
    """Fast kernels for fixed-shape training on CUDA: cuDNN autotuning and TF32 matmuls/convolutions."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def lr_factor(progress: float, warmup_fraction: float) -> float:
    """Linear warm-up then cosine decay to 0, as a function of training progress in [0, 1]."""
    if warmup_fraction > 0 and progress < warmup_fraction:
        return max(progress / warmup_fraction, 1e-3)
    rest = (progress - warmup_fraction) / max(1e-8, 1.0 - warmup_fraction)
    return 0.5 * (1.0 + math.cos(math.pi * min(max(rest, 0.0), 1.0)))


@dataclass
class TrainState:
    """What the loop knows about itself; callbacks read it."""

    step: int = 0
    total_steps: int = 0
    elapsed: float = 0.0            # seconds of training (resumes add up)
    images_seen: int = 0
    progress: float = 0.0
    last_logs: dict = field(default_factory=dict)
    stop_reason: str | None = None


class Callback:
    """Hooks of the loop; override what you need.

    ``on_train_end`` runs in list order, except callbacks with ``end_last`` (the
    status writer), which run after the final evaluation and checkpoint.
    """

    end_last = False

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, logs: dict) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


class Trainer:
    """Train ``cfg.method`` on ``cfg.dataset`` into ``run_dir``.

    >>> Trainer(TrainConfig(method="simclr", dataset="digits", epochs=1), "runs/x").fit()
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, callbacks: list[Callback] | None = None,
                 dataset: ImageDataset | None = None, test_dataset: ImageDataset | None = None, command: str = "") -> None:
        from ssl_viz.augment import MultiViewAugment, parse_policy

        self.cfg, self.run_dir, self.command = cfg, Path(run_dir), command
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.device = pick_device(cfg.device)
        configure_backend(self.device)
        torch.manual_seed(cfg.seed + self.rank)

        self.data = dataset if dataset is not None else load_dataset(cfg.dataset, "train", label=cfg.dataset_label)
        if cfg.max_train_images:
            self.data = self.data.head(cfg.max_train_images, seed=cfg.seed)
        self.test_data = test_dataset
        encoder = build_encoder(cfg.encoder, in_channels=self.data.channels, width=cfg.encoder_width)
        self.method = build_method(cfg.method, encoder, cfg.method_cfg, num_samples=len(self.data), num_classes=max(1, self.data.num_classes))
        self.method.to(self.device)
        if cfg.channels_last and self.device.type in ("cuda", "cpu"):
            self.method.to(memory_format=torch.channels_last)
        self.model = self.method
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.method, device_ids=ids, find_unused_parameters=True)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.augment = MultiViewAugment(parse_policy(cfg.augment), n_views=self.method.num_views)
        self.optimizer = self._make_optimizer()
        self.images = self.data.images.to(self.device) if self.device.type == "cuda" else self.data.images
        self.labels = self.data.labels.to(self.device)
        self.generator = torch.Generator(device=self.device if self.device.type == "cuda" else "cpu").manual_seed(cfg.seed * 1000 + self.rank)
        self.state = TrainState()
        self.metrics: dict[str, float] = {}
        self.callbacks = callbacks if callbacks is not None else default_callbacks(cfg, self.rank)
        steps_per_epoch = max(1, len(self.data) // (cfg.batch_size * self.world))
        self.steps_per_epoch = steps_per_epoch
        self.state.total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))

    # ------------------------------------------------------------------ set-up
    def _make_optimizer(self) -> torch.optim.Optimizer:
        groups = self.method.parameter_groups(self.cfg.weight_decay)
        if self.cfg.optimizer == "adamw":
            fused = self.device.type in ("cpu", "cuda")  # one fused kernel for all parameters instead of a loop over them
            return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(0.9, 0.95), fused=fused)
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.cfg.lr, momentum=0.9, nesterov=True)
        raise TrainingError(f"unknown optimizer {self.cfg.optimizer!r}; choose adamw or sgd")

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
        self.generator.manual_seed(self.cfg.seed * 1000 + self.rank + self.state.step)
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
        if self.cfg.time_budget:
            return min(1.0, self.state.elapsed / self.cfg.time_budget)
        return min(1.0, self.state.step / self.state.total_steps)

    def train_step(self, index: torch.Tensor) -> dict:
        cfg = self.cfg
        x = self.images[index.to(self.images.device)].to(self.device, non_blocking=True).float().div_(255.0)
        if cfg.channels_last and self.device.type in ("cuda", "cpu"):
            x = x.contiguous(memory_format=torch.channels_last)
        views = self.augment(x, generator=self.generator)
        labels = self.labels[index.to(self.labels.device)]
        factor = lr_factor(self.progress(), cfg.warmup_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * factor
        use_amp = cfg.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = self.forward(views, index.to(self.device), labels)
        loss = out.loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if hasattr(self.method, "before_optimizer_step"):
            self.method.before_optimizer_step(self.state.step)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.method.parameters(), cfg.grad_clip) if cfg.grad_clip else torch.zeros(())
        logs = out.floats(grad_norm=grad_norm)  # the step's one host synchronisation
        if not math.isfinite(logs["loss"]):  # checked before the update: the weights stay finite
            raise FloatingPointError(f"loss became {logs['loss']} at step {self.state.step}")
        self.optimizer.step()
        self.method.on_step_end(self.state.step, self.state.total_steps)
        return {**logs, "lr": cfg.lr * factor}

    def fit(self, resume: bool = False) -> TrainState:
        """Run until the epoch or time budget is spent; returns the final state."""
        if resume and not self.resume():
            raise TrainingError(f"nothing to resume in {self.run_dir}: no checkpoint yet")
        self.method.train()
        for cb in self.callbacks:
            cb.on_train_start(self)
        start = time.perf_counter() - self.state.elapsed
        window_t, window_imgs = time.perf_counter(), 0
        try:
            for index in self.batches():
                if self._finished():
                    break
                logs = self.train_step(index)
                self.state.step += 1
                self.state.images_seen += len(index) * self.world
                window_imgs += len(index) * self.world
                self.state.elapsed = time.perf_counter() - start
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
                start += spent  # monitoring and checkpoints do not eat the training budget
                window_t += spent
            self.state.stop_reason = self.state.stop_reason or "done"
        except FloatingPointError as exc:
            self.state.stop_reason = f"diverged: {exc}"
        except KeyboardInterrupt:
            self.state.stop_reason = "cancelled"
        except OSError as exc:  # disk full during a checkpoint: the previous checkpoint is intact
            self.state.stop_reason = f"failed: {exc.strerror or exc}"
        self.method.eval()
        for cb in sorted(self.callbacks, key=lambda c: c.end_last):
            cb.on_train_end(self)
        if self.distributed:
            dist.barrier()
        return self.state

    def _finished(self) -> bool:
        if self.cfg.time_budget:
            return self.state.elapsed >= self.cfg.time_budget
        return self.state.step >= self.state.total_steps

    # ------------------------------------------------------------------ saving
    def card(self) -> dict:
        return {
            "method": self.cfg.method, "encoder": self.cfg.encoder, "dataset": self.cfg.dataset, "augment": self.cfg.augment,
            "in_channels": self.data.channels, "image_size": list(self.data.image_size), "num_samples": len(self.data),
            "num_classes": self.data.num_classes, "steps": self.state.step, "images_seen": self.state.images_seen,
            "seconds": round(self.state.elapsed, 1), "device": device_name(self.device), "world_size": self.world,
            "command": self.command, "metrics": dict(self.metrics),
        }

    def save(self) -> None:
        """Write checkpoint, config, card and resumable state (rank 0; atomic)."""
        if self.rank != 0:
            return
        loop = {"step": self.state.step, "elapsed": self.state.elapsed, "images_seen": self.state.images_seen, "total_steps": self.state.total_steps}
        save_run(self.run_dir, self.method, self.cfg, self.card(), {"optimizer": self.optimizer.state_dict(), "loop": loop})


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


# ---------------------------------------------------------------------------- callbacks


class MetricsLog(Callback):
    """Append logs to ``metrics.jsonl`` every ``every`` steps and keep ``status.json`` fresh.

    Its final status is written last, so "done" means the checkpoint is on disk.
    """

    end_last = True

    def __init__(self, every: int = 10) -> None:
        self.every = every

    def on_train_start(self, trainer: Trainer) -> None:
        trainer.run_dir.mkdir(parents=True, exist_ok=True)
        write_status(trainer, "running")

    def on_step_end(self, trainer: Trainer, logs: dict) -> None:
        s = trainer.state
        if s.step % self.every == 0 or s.step == 1:
            append_metrics(trainer.run_dir, {"step": s.step, "time": round(s.elapsed, 3), "epoch": s.step / trainer.steps_per_epoch,
                                             "progress": round(s.progress, 4), **logs})
            write_status(trainer, "running")

    def on_train_end(self, trainer: Trainer) -> None:
        reason = trainer.state.stop_reason or "done"
        write_status(trainer, reason.split(":")[0], reason=reason)


class KnnMonitor(Callback):
    """Every ``every`` steps: weighted kNN top-1 (k=200, T=0.1) and alignment/uniformity on held-out images.

    ``samples`` test images against a bank of twice as many training images; with
    ``samples=0`` (or at least the test set's size) the full protocol: the whole test
    set against the whole training set, as the time-to-quality curves need.
    """

    def __init__(self, every: int, samples: int = 2000) -> None:
        self.every, self.samples = every, samples
        self.test = None

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.data.has_labels:
            test = trainer.test_data or load_dataset(trainer.cfg.dataset, "test", label=trainer.cfg.dataset_label)
            full = not self.samples or self.samples >= len(test)
            self.test = test if full else test.head(self.samples, seed=1)
            self.bank = trainer.data if full else trainer.data.head(self.samples * 2, seed=2)

    def measure(self, trainer: Trainer) -> dict:
        method = trainer.method
        was_training = method.training
        method.eval()
        with torch.inference_mode():
            embed = lambda x: method.encoder(x)  # noqa: E731
            bank = embed_dataset(embed, self.bank.images, device=trainer.device)
            test = embed_dataset(embed, self.test.images, device=trainer.device)
            x = self.test.float_images(slice(0, 512)).to(trainer.device)
            gen = torch.Generator(device=trainer.generator.device).manual_seed(123)
            v1, v2 = trainer.augment(x, generator=gen)[:2]
            z1, z2 = F.normalize(method.encoder(v1).float(), dim=1), F.normalize(method.encoder(v2).float(), dim=1)
        method.train(was_training)
        return {"knn_top1": knn_accuracy(bank, self.bank.labels, test, self.test.labels), "knn_n_test": len(self.test), "knn_n_bank": len(self.bank),
                "alignment": alignment(z1, z2), "uniformity": uniformity(test)}

    def on_step_end(self, trainer: Trainer, logs: dict) -> None:
        if self.test is not None and self.every and trainer.state.step % self.every == 0 and trainer.rank == 0:
            result = self.measure(trainer)
            trainer.metrics.update(result)
            append_metrics(trainer.run_dir, {"step": trainer.state.step, "time": round(trainer.state.elapsed, 3), **result})

    def on_train_end(self, trainer: Trainer) -> None:
        if self.test is not None and trainer.rank == 0 and trainer.state.step > 0 and not str(trainer.state.stop_reason).startswith("diverged"):
            result = self.measure(trainer)
            trainer.metrics.update(result)
            append_metrics(trainer.run_dir, {"step": trainer.state.step, "time": round(trainer.state.elapsed, 3), **result})


class Checkpointer(Callback):
    """Save every ``every_seconds`` and at the end (not after divergence: the last good one stays)."""

    def __init__(self, every_seconds: float) -> None:
        self.every, self.last = every_seconds, 0.0

    def on_train_start(self, trainer: Trainer) -> None:
        self.last = trainer.state.elapsed

    def on_step_end(self, trainer: Trainer, logs: dict) -> None:
        if trainer.state.elapsed - self.last >= self.every:
            trainer.save()
            self.last = trainer.state.elapsed

    def on_train_end(self, trainer: Trainer) -> None:
        if not str(trainer.state.stop_reason).startswith(("diverged", "failed")) and trainer.state.step > 0:
            trainer.save()


class ProgressBar(Callback):
    """A one-line progress bar on stderr (CLI)."""

    def __init__(self, every: int = 10) -> None:
        self.every = every

    def on_step_end(self, trainer: Trainer, logs: dict) -> None:
        s = trainer.state
        if s.step % self.every and s.progress < 1.0:
            return
        p = s.progress
        eta = s.elapsed / p - s.elapsed if p > 0 else float("nan")
        bar = "#" * int(30 * p) + "-" * (30 - int(30 * p))
        knn = trainer.metrics.get("knn_top1")
        extra = f" knn {knn:.3f}" if knn is not None else ""
        print(f"\r[{bar}] {p:5.1%} step {s.step} loss {logs['loss']:.4f} {logs['images_per_s']:.0f} img/s eta {eta:4.0f}s{extra}   ",
              end="", flush=True, file=__import__("sys").stderr)

    def on_train_end(self, trainer: Trainer) -> None:
        print(file=__import__("sys").stderr)


def default_callbacks(cfg: TrainConfig, rank: int = 0, progress_bar: bool = False) -> list[Callback]:
    if rank != 0:
        return []
    cbs: list[Callback] = [MetricsLog(cfg.log_every), KnnMonitor(cfg.knn_every, cfg.knn_samples), Checkpointer(cfg.checkpoint_every)]
    from ssl_viz.analysis.runs import EvolutionRecorder  # embedding snapshots (evolution.npz) for the runs page

    cbs.append(EvolutionRecorder(cfg.knn_every))
    if progress_bar:
        cbs.append(ProgressBar(cfg.log_every))
    return cbs


# ---------------------------------------------------------------------------- run files


def append_metrics(run_dir: Path, record: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / METRICS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All complete records of ``metrics.jsonl`` (a torn last line is skipped)."""
    path = Path(run_dir) / METRICS
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def write_status(trainer: Trainer, state: str, reason: str | None = None) -> None:
    s = trainer.state
    atomic_write_json(trainer.run_dir / STATUS, {
        "state": state, "reason": reason, "pid": os.getpid(), "heartbeat": time.time(), "step": s.step,
        "total_steps": s.total_steps, "progress": s.progress, "elapsed": s.elapsed, "device": device_name(trainer.device),
        "time_budget": trainer.cfg.time_budget,
    })


def load_config(run_dir: str | Path) -> TrainConfig:
    data = read_json(Path(run_dir) / "config.json")
    if data is None:
        raise TrainingError(f"{run_dir} has no config.json: not a run directory")
    return from_dict(TrainConfig, data)


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress_bar: bool = False, command: str = "") -> TrainState:
    """Train (or resume) a run; SIGTERM cancels cleanly, keeping the last checkpoint."""
    def on_term(signum, frame):
        raise KeyboardInterrupt

    if hasattr(signal, "SIGTERM"):
        try:
            signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread
            pass
    rank = int(os.environ.get("RANK", "0"))
    trainer = Trainer(cfg, run_dir, callbacks=default_callbacks(cfg, rank, progress_bar), command=command)
    state = trainer.fit(resume=resume)
    if trainer.distributed:
        dist.destroy_process_group()
    return state
