"""The contract every SSL method follows.

A method is an ``nn.Module`` holding an :class:`~ssl_viz.encoders.Encoder` and
its heads. The one training loop (``ssl_viz.train.Trainer``) calls::

    out = method(views, index, labels, generator=g)   # StepOutput(loss, logs, state); no side effects
    out.loss.backward(); method.before_optimizer_step(step); optimizer.step()
    method.on_step_end(out, step, total_steps)        # momentum / queue / bank updates from out.state

``forward`` has no side effects at all: it changes no parameter, buffer or
attribute of the method (BatchNorm's running statistics in train mode aside) and
draws nothing from torch's global random generator. What an update after the
optimiser step needs (MoCo's keys to enqueue, the memory bank's rows, SwAV's
embeddings for its queue) travels in ``StepOutput.state``, detached, and
:meth:`SSLMethod.on_step_end` applies it. Random draws inside a step (the memory
bank's negatives) come from the ``generator`` passed to ``forward``.

``embed(x)`` returns backbone features and never changes the model, so a
model can be visualised while it is shared between browser sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from ssl_viz.config import MethodConfig
from ssl_viz.encoders import Encoder, projection_head


@dataclass
class StepOutput:
    """What a training step returns: the scalar loss, 0-d tensors to log, and the state update it implies.

    Logs stay tensors on the device so a step costs one host synchronisation
    (:meth:`floats`), not one per logged value. ``state`` holds detached tensors
    that :meth:`SSLMethod.on_step_end` needs after the optimiser step (e.g. MoCo
    ``{"keys": [N, D]}``); it is empty for methods without such state.
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def floats(self, **extra: torch.Tensor | float) -> dict[str, float]:
        """``{"loss", **extra, **logs}`` as Python floats, read from the device in one transfer."""
        items = {"loss": self.loss, **extra, **self.logs}
        device = self.loss.device
        stacked = torch.stack([torch.as_tensor(v, device=device).detach().float().reshape(()) for v in items.values()])
        return dict(zip(items, stacked.tolist()))


class SSLMethod(nn.Module):
    """Base class: an encoder ``f`` and a projection head ``g`` (Chen et al. 2020).

    Subclasses implement :meth:`forward` (no side effects; see the module docstring)
    and may override :meth:`on_step_end`, which reads ``StepOutput.state``.
    ``num_views`` is how many augmented views of each image ``forward`` expects
    (2, or more for multi-crop).
    """

    name = "base"
    description = ""       # one line for the UI
    num_views = 2
    needs_labels = False   # True: forward needs ``labels`` (supervised baseline)
    supports_small_crops = False  # True: forward uses views past ``num_views`` (multi-crop small crops)

    def __init__(self, encoder: Encoder, cfg: MethodConfig, num_samples: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg
        self.num_samples = num_samples
        self.projector = projection_head(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim)

    def forward(self, views: list[torch.Tensor], index: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> StepOutput:  # pragma: no cover - abstract
        """``views``: list of ``[B, C, H, W]`` float batches; ``index``: dataset indices ``[B]``;
        ``labels``: ``[B]`` class labels (used only by the supervised baseline); ``generator``: the
        source of the step's random draws (the memory bank's negatives; None: a fixed seed, 0)."""
        raise NotImplementedError

    def before_optimizer_step(self, step: int) -> None:
        """Hook between ``backward()`` and ``optimizer.step()`` (e.g. SwAV drops the
        prototypes' gradients while they are frozen). No-op by default."""

    @torch.no_grad()
    def on_step_end(self, out: StepOutput, step: int, total_steps: int) -> None:
        """Explicit state updates after the optimiser step (EMA, queues, banks), from ``out.state``
        of this step's :meth:`forward`; ``step`` counts from 0 to ``total_steps``. No-op by default."""

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[B, D]`` (no side effects; caller sets eval mode)."""
        return self.encoder(x)

    @torch.no_grad()
    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Projection-head output ``[B, proj_dim]``."""
        return self.projector(self.encoder(x))

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Parameters to optimise: no weight decay on biases and norm weights."""
        decay, no_decay = [], []
        for _, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """theta_t <- m theta_t + (1 - m) theta_o (MoCo, He et al. 2020, eq. 2; BYOL)."""
    with torch.no_grad():
        for pt, po in zip(target.parameters(), online.parameters()):
            pt.mul_(momentum).add_(po.detach(), alpha=1.0 - momentum)
        for bt, bo in zip(target.buffers(), online.buffers()):
            bt.copy_(bo)


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL's schedule: m = 1 - (1 - m0) (cos(pi k / K) + 1) / 2."""
    import math

    if total_steps <= 0:
        return base
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1.0) / 2.0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``[B, D]`` across DDP ranks keeping gradients; identity when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather without gradients (MoCo queue keys); identity when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def draw_generator(generator: torch.Generator | None) -> torch.Generator:
    """``generator``, or a CPU generator seeded with 0 when None (a method never draws from the global RNG)."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
