"""What the training loop shares with its callbacks: its state, the hooks, and the view a callback has of the loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from ssl_viz.config import TrainConfig
from ssl_viz.data import ImageDataset
from ssl_viz.methods import SSLMethod


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says why."""


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


class Callback:
    """Hooks of the loop; override what you need.

    ``on_train_end`` runs in list order, except callbacks with ``end_last`` (the
    status writer), which run after the final evaluation and checkpoint.
    """

    end_last = False

    def on_train_start(self, trainer: TrainerView) -> None: ...

    def on_step_end(self, trainer: TrainerView, logs: dict) -> None: ...

    def on_train_end(self, trainer: TrainerView) -> None: ...
