"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssl_viz.config import MethodConfig
from ssl_viz.encoders import Encoder
from ssl_viz.losses import sinkhorn_knopp, swav_loss
from ssl_viz.methods.base import SSLMethod, StepOutput, gather_no_grad, rank


class SwAV(SSLMethod):
    """Online clustering: codes ``q`` (Sinkhorn-Knopp assignments of the two large
    crops to ``cfg.n_prototypes`` prototypes) are predicted from the other views.

    * ``z = normalise(g(f(x)))``, scores ``z.c`` with unit-norm prototypes ``c``
      (``nn.Linear(proj_dim, n_prototypes, bias=False)``). The prototypes are
      re-normalised in :meth:`on_step_end` (after the optimiser step; it is a
      parameter update, so never in ``forward``).
    * Codes come from the detached scores of ``views[0]`` and ``views[1]``;
      further views (multi-crop small crops) only predict. Under DDP the scores
      are gathered for Sinkhorn and each rank keeps its own rows.
    * ``cfg.swav_queue_size > 0``: a queue of past embeddings per large crop is
      prepended to the batch for Sinkhorn once it is full (as in the paper's small
      batch setting); filled in :meth:`on_step_end` with the embeddings of all
      ranks, so the queue is the same on every rank.
    * The prototypes are frozen for the first ``cfg.freeze_prototypes_steps``
      steps: :meth:`before_optimizer_step` drops their gradients.
    """

    name = "swav"
    description = "SwAV: swapped prediction of Sinkhorn cluster codes, prototypes, multi-crop (Caron et al. 2020)"
    num_views = 2
    supports_small_crops = True

    def __init__(self, encoder: Encoder, cfg: MethodConfig, num_samples: int = 0) -> None:
        super().__init__(encoder, cfg, num_samples)
        self.prototypes = nn.Linear(cfg.proj_dim, cfg.n_prototypes, bias=False)
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        q = max(0, cfg.swav_queue_size)
        self.register_buffer("queue", torch.zeros(2, q, cfg.proj_dim))       # 2 x Q x D, newest first
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))

    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised embedding ``[B, D]``, prototype scores ``[B, K]``)."""
        z = F.normalize(self.projector(self.encoder(x)), dim=1)
        return z, self.prototypes(z)

    @torch.no_grad()
    def codes(self, scores: torch.Tensor, crop: int) -> torch.Tensor:
        """Sinkhorn codes ``[B, K]`` of this rank's samples for large crop ``crop``."""
        b = scores.shape[0]
        s = gather_no_grad(scores.detach())                                  # B_all x K
        start = rank() * b
        queue_len = self.queue.shape[1]
        if queue_len and int(self.queue_count) >= queue_len:
            s = torch.cat([self.queue[crop] @ self.prototypes.weight.T, s])  # (Q + B_all) x K
            start += queue_len
        q = sinkhorn_knopp(s, self.cfg.sinkhorn_eps, self.cfg.sinkhorn_iters)
        return q[start:start + b]

    def forward(self, views: list[torch.Tensor], index: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> StepOutput:
        if len(views) < 2:
            raise ValueError(f"swav needs at least 2 views, got {len(views)}")
        zs, scores = zip(*(self.scores(x) for x in views))                    # V x [B x D], V x [B x K]
        assignments = [self.codes(scores[i], i) for i in range(2)]           # 2 x [B x K], large crops only
        loss = swav_loss(list(scores), assignments, self.cfg.temperature)
        with torch.no_grad():
            q = torch.stack(assignments)                                     # 2 x B x K
            entropy = -(q * torch.log(q.clamp_min(1e-12))).sum(dim=-1).mean()
            swapped = torch.stack([scores[1].argmax(1) == q[0].argmax(1), scores[0].argmax(1) == q[1].argmax(1)])
            logs = {
                "acc": swapped.float().mean(),                        # argmax agreement, swapped views
                "code_entropy": (entropy / math.log(q.shape[-1])),   # 1: uniform codes
                "prototypes_used": q.argmax(-1).unique().numel() / q.shape[-1],
            }
        return StepOutput(loss, logs, {"embeddings": torch.stack([zs[0], zs[1]]).detach()})   # 2 x B x D, for the queue

    def before_optimizer_step(self, step: int) -> None:
        """Freeze the prototypes for the first ``cfg.freeze_prototypes_steps`` steps."""
        if step < self.cfg.freeze_prototypes_steps:
            self.prototypes.weight.grad = None

    @torch.no_grad()
    def on_step_end(self, out: StepOutput, step: int, total_steps: int) -> None:
        """Normalise the prototypes; push this step's large-crop embeddings (``out.state["embeddings"]``) into the queue."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        z = out.state.get("embeddings")
        if z is None:
            return
        queue_len = self.queue.shape[1]
        if not queue_len:
            return
        z = torch.stack([gather_no_grad(z[0]), gather_no_grad(z[1])])[:, :queue_len].to(self.queue.dtype)
        b = z.shape[1]
        self.queue[:, b:] = self.queue[:, :-b].clone()
        self.queue[:, :b] = z
        self.queue_count.copy_((self.queue_count + b).clamp(max=queue_len))
