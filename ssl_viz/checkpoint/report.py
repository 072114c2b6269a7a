"""What loading a checkpoint produced: the model (:class:`LoadedModel`), how its keys matched, and why it failed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ssl_viz.encoders import Encoder


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the encoder; the message says why."""


@dataclass
class LoadReport:
    """How a checkpoint's keys were matched to the encoder."""

    layout: str = "ssl-viz"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    loaded: int = 0

    def summary(self) -> str:
        text = f"{self.layout} layout: {self.loaded} tensors loaded"
        if self.missing:
            text += f"; {len(self.missing)} missing (e.g. {', '.join(self.missing[:3])})"
        if self.unexpected:
            text += f"; {len(self.unexpected)} unexpected (e.g. {', '.join(self.unexpected[:3])})"
        return text


@dataclass
class LoadedModel:
    """A model ready to look at: eval mode, shared read-only between sessions.

    Attributes:
        encoder: backbone ``f`` (images in [0, 1] -> ``[B, D]``).
        projector: projection head ``g`` or None (foreign / ImageNet models).
        classifier: class-logit head of supervised models, or None.
        card: the model card (method, encoder, dataset, metrics, ...).
    """

    encoder: Encoder
    projector: nn.Module | None
    classifier: nn.Module | None
    card: dict
    source: str
    report: LoadReport = field(default_factory=LoadReport)

    @property
    def name(self) -> str:
        return self.card.get("name") or Path(self.source).name

    def representations(self) -> list[str]:
        """Embedding choices: ``backbone``, ``projector`` (if any), ``stage:NAME`` per stage."""
        reps = ["backbone"] + (["projector"] if self.projector is not None else [])
        return reps + [f"stage:{s}" for s in self.encoder.stage_names()[:-1]]

    def embed_fn(self, representation: str = "backbone") -> Callable[[torch.Tensor], torch.Tensor]:
        """A function images ``[B, C, H, W]`` -> embeddings ``[B, D]`` for one representation."""
        if representation == "backbone":
            return self.encoder
        if representation == "projector":
            if self.projector is None:
                raise CheckpointError(f"{self.name} has no projection head")
            return lambda x: self.projector(self.encoder(x))
        if representation.startswith("stage:"):
            stage = representation.split(":", 1)[1]
            if stage not in self.encoder.stage_names():
                raise CheckpointError(f"{self.encoder.name} has no stage {stage!r}")
            return lambda x: torch.flatten(F.adaptive_avg_pool2d(self.encoder.forward_stages(x)[stage], 1), 1)
        raise CheckpointError(f"unknown representation {representation!r}; choose from {self.representations()}")


@dataclass
class FitReport:
    """How a state dict fits a module's: keys it lacks, keys it has in excess, and keys with other shapes."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    def text(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing keys (e.g. {', '.join(self.missing[:3])})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected keys (e.g. {', '.join(self.unexpected[:3])})")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} tensors of another shape (e.g. {'; '.join(self.mismatched[:2])})")
        return "; ".join(parts) or "fits"


def fit_report(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> FitReport:
    mismatched = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in target.items() if k in state and state[k].shape != v.shape]
    return FitReport(sorted(set(target) - set(state)), sorted(set(state) - set(target)), mismatched)


def check_finite(module: nn.Module, source) -> None:
    """Refuse weights that cannot give numbers: NaN/inf values, or a negative BatchNorm running variance.

    A negative variance is corrupt statistics (normalising by its square root gives NaN for every image).
    Raises :class:`CheckpointError` naming how many tensors and the first one.
    """
    state = module.state_dict()
    bad = [n for n, p in state.items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise CheckpointError(f"{Path(str(source)).name}: non-finite (NaN/inf) values in {len(bad)} tensors, e.g. {bad[0]}")
    negative = [n for n, p in state.items() if n.endswith("running_var") and p.is_floating_point() and bool((p < 0).any())]
    if negative:
        raise CheckpointError(f"{Path(str(source)).name}: corrupt BatchNorm statistics: negative running variance in "
                              f"{len(negative)} tensors, e.g. {negative[0]}")
