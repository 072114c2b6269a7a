"""What the training loop shares with its callbacks: its state, the hooks, and the view a callback has of the loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from ssl_viz.config import TrainConfig
from ssl_viz.data import ImageDataset
from ssl_viz.methods import METHODS, SSLMethod


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says why."""


def check_trainable(cfg: TrainConfig, data: ImageDataset) -> None:
    """Refuse, with one sentence, a dataset the method cannot learn from (before anything is built).

    Raises:
        TrainingError: a method that needs labels (``supervised``) on data with fewer than two classes.
    """
    cls = METHODS.get(cfg.method)
    if cls is not None and cls.needs_labels and data.num_classes < 2:
        have = f"only one class ({data.class_names[0]})" if data.num_classes == 1 else "no labels"
        raise TrainingError(f"{cfg.method} learns from labels and needs at least 2 classes, but {cfg.dataset} has {have}; "
                            "pick a self-supervised method or a dataset with two or more classes")


@dataclass
class TrainState:
    """What the loop knows about itself; callbacks read it."""

    step: int = 0
    total_steps: int = 0            # under a time budget: estimated from the pace so far (total_estimated)
    total_estimated: bool = False
    elapsed: float = 0.0            # seconds of training (resumes add up)
    images_seen: int = 0
    progress: float = 0.0
    last_logs: dict = field(default_factory=dict)
    stop_reason: str | None = None


class TrainerView(Protocol):
    """What a callback reads of the :class:`~ssl_viz.train.trainer.Trainer` running it (and ``save()``, which it may call)."""

    cfg: TrainConfig
    run_dir: Path
    state: TrainState
    method: SSLMethod                       # the bare method (not the DDP / compiled wrapper)
    data: ImageDataset                      # training images
    test_data: ImageDataset | None          # held-out images for the monitors (None: the dataset's test split)
    augment: Callable                       # (x [B, C, H, W], generator=) -> list of views
    device: torch.device
    generator: torch.Generator              # the augmentations' generator (its device is the one to draw on)
    rank: int
    world: int
    steps_per_epoch: int
    metrics: dict[str, float]               # latest monitor results, recorded in the model card

    def save(self) -> None: ...

    def request_checkpoint(self) -> None: ...


class Callback:
    """Hooks of the loop; override what you need.

    ``on_train_end`` runs in list order, except callbacks with ``end_last`` (the
    status writer), which run after the final evaluation and checkpoint.
    """

    end_last = False

    def on_train_start(self, trainer: TrainerView) -> None: ...

    def on_step_end(self, trainer: TrainerView, logs: dict) -> None: ...

    def on_train_end(self, trainer: TrainerView) -> None: ...
