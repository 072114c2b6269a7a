"""Supervised baseline: the same encoder trained with labels, for comparison."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_viz.config import MethodConfig
from ssl_viz.encoders import Encoder
from ssl_viz.methods.base import SSLMethod, StepOutput


class Supervised(SSLMethod):
    """Encoder + linear classifier on the first view, cross-entropy with ``labels``.

    The projector exists only so every method has ``project()``; it is frozen
    (random, untrained) and unused by the loss. Use :meth:`logits` for class scores.
    """

    name = "supervised"
    description = "Supervised baseline: cross-entropy with the labels (same encoder)"
    needs_labels = True

    def __init__(self, encoder: Encoder, cfg: MethodConfig, num_samples: int = 0, num_classes: int = 0) -> None:
        super().__init__(encoder, cfg, num_samples)
        if num_classes < 2:
            raise ValueError(f"supervised needs num_classes >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.classifier = nn.Linear(encoder.feature_dim, num_classes)
        self.projector.requires_grad_(False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, num_classes]``. Keeps gradients (attribution needs them);
        wrap in ``torch.no_grad()`` otherwise."""
        return self.classifier(self.encoder(x))

    def forward(self, views: list[torch.Tensor], index: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> StepOutput:
        if labels is None:
            raise ValueError("supervised needs labels")
        labels = labels.to(views[0].device).long()
        logits = self.logits(views[0])                                      # B x C
        valid = labels >= 0                                                 # -1: unlabelled
        loss = F.cross_entropy(logits[valid], labels[valid])
        with torch.no_grad():
            acc = (logits[valid].argmax(dim=1) == labels[valid]).float().mean()
        return StepOutput(loss, {"acc": acc})
