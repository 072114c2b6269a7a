"""MoCo v2 (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation
Learning"; Chen et al. 2020b, "Improved Baselines with Momentum Contrastive Learning")."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ssl_viz.config import MethodConfig
from ssl_viz.encoders import Encoder
from ssl_viz.losses import contrastive_loss, info_nce_logits
from ssl_viz.methods.base import SSLMethod, StepOutput, ema_update, gather_no_grad


class MoCo(SSLMethod):
    """Query encoder ``f_q`` (encoder + MLP projector, trained) and key encoder ``f_k``
    (their momentum copy); InfoNCE of each query against its key and a queue of
    ``K = cfg.queue_size`` keys from earlier batches.

    * Key encoder update ``theta_k <- m theta_k + (1 - m) theta_q`` (eq. 2) with the
      paper's fixed momentum ``m = cfg.momentum`` (BN buffers are copied), applied
      in :meth:`on_step_end`, i.e. after the optimiser step and before the next
      keys are computed, as in the paper's pseudocode.
    * ``cfg.symmetric``: the loss is ``(L(q1, k2) + L(q2, k1)) / 2`` and both key sets
      are enqueued (2B keys per step), as in MoCo's CIFAR demo; otherwise
      ``L(q1, k2)`` and B keys.
    * The queue is updated in :meth:`on_step_end`, after the logits that used it
      were formed; under DDP the keys of all ranks are gathered and enqueued.
    * Shuffle-BN is not implemented: with one device the key encoder's BN sees the
      same batch as the query encoder, which can leak a little batch information.
    """

    name = "moco"
    description = "MoCo v2: momentum key encoder and a queue of negatives, InfoNCE (He et al. 2020)"

    def __init__(self, encoder: Encoder, cfg: MethodConfig, num_samples: int = 0) -> None:
        super().__init__(encoder, cfg, num_samples)
        if cfg.queue_size < 1:
            raise ValueError(f"moco needs queue_size >= 1, got {cfg.queue_size}")
        self.key_encoder = copy.deepcopy(self.encoder)
        self.key_projector = copy.deepcopy(self.projector)
        for p in list(self.key_encoder.parameters()) + list(self.key_projector.parameters()):
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_size, cfg.proj_dim), dim=1))   # K x D
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised keys ``[B, D]`` of the momentum encoder."""
        return F.normalize(self.key_projector(self.key_encoder(x)), dim=1)

    def contrast(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE of queries ``[N, D]`` against keys ``[N, D]`` and the queue; returns
        (loss, logits ``[N, 1 + K]``)."""
        # logits: Nx(1+K), positive key in column 0, the queue's K keys as negatives
        logits = info_nce_logits(q, k, self.queue.clone().detach(), self.cfg.temperature)
        return contrastive_loss(logits, self.cfg.temperature, self.cfg.debiased_tau_plus), logits

    def forward(self, views: list[torch.Tensor], index: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> StepOutput:
        x1, x2 = views[0], views[1]
        q1 = F.normalize(self.projector(self.encoder(x1)), dim=1)          # N x D
        k2 = self.keys(x2)                                                 # N x D, no gradient
        loss, logits = self.contrast(q1, k2)
        keys = [k2]
        if self.cfg.symmetric:
            q2 = F.normalize(self.projector(self.encoder(x2)), dim=1)
            k1 = self.keys(x1)
            loss21, logits21 = self.contrast(q2, k1)
            loss = (loss + loss21) / 2
            logits = torch.cat([logits, logits21])
            keys.append(k1)
        with torch.no_grad():
            cos = logits * self.cfg.temperature
            logs = {
                "pos_sim": cos[:, 0].mean(),
                "neg_sim": cos[:, 1:].mean(),
                "acc": (logits.argmax(dim=1) == 0).float().mean(),
            }
        return StepOutput(loss, logs, {"keys": torch.cat(keys).detach()})    # keys [N or 2N, D], enqueued in on_step_end

    @torch.no_grad()
    def on_step_end(self, out: StepOutput, step: int, total_steps: int) -> None:
        """Momentum update of the key encoder, then enqueue this step's keys (``out.state["keys"]``)."""
        ema_update(self.key_encoder, self.encoder, self.cfg.momentum)
        ema_update(self.key_projector, self.projector, self.cfg.momentum)
        keys = out.state.get("keys")
        if keys is not None:
            self._dequeue_and_enqueue(gather_no_grad(keys))

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest ``len(keys)`` entries (a ring buffer; wraps around)."""
        size = self.queue.shape[0]
        keys = keys[-size:].to(self.queue.dtype)
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[slots] = keys
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)
