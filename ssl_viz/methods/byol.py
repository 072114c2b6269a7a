"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning")."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ssl_viz.config import MethodConfig
from ssl_viz.encoders import Encoder, projection_head
from ssl_viz.losses import byol_loss
from ssl_viz.methods.base import SSLMethod, StepOutput, cosine_momentum, ema_update


class BYOL(SSLMethod):
    """Online network (encoder, projector, predictor ``q``) regresses the target
    network's projection of the other view; the target is an EMA of the online
    encoder and projector. No negatives: not contrastive.

    * Loss (eq. 2, symmetrised as in the paper): ``byol_loss(q(z1), z2') + byol_loss(q(z2), z1')``
      where ``z'`` comes from the target network (no gradient).
    * Target update ``xi <- tau xi + (1 - tau) theta`` in :meth:`on_step_end` with
      BYOL's cosine schedule ``tau = 1 - (1 - tau_0) (cos(pi k / K) + 1) / 2``,
      ``tau_0 = cfg.momentum``.
    """

    name = "byol"
    description = "BYOL: predict an EMA target network's projection, no negatives (Grill et al. 2020)"

    def __init__(self, encoder: Encoder, cfg: MethodConfig, num_samples: int = 0) -> None:
        super().__init__(encoder, cfg, num_samples)
        self.predictor = projection_head(cfg.proj_dim, cfg.predictor_hidden, cfg.proj_dim)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in list(self.target_encoder.parameters()) + list(self.target_projector.parameters()):
            p.requires_grad_(False)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The base groups without the predictor, whose two groups (decayed weights, biases and norms) train at
        ``cfg.predictor_lr_scale`` times the schedule's lr (``"lr_scale"``, read by the Trainer)."""
        mine = {id(p) for p in self.predictor.parameters()}
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in mine]} for g in super().parameter_groups(weight_decay)]
        pred = [p for p in self.predictor.parameters() if p.requires_grad]
        scale = self.cfg.predictor_lr_scale
        groups += [{"params": [p for p in pred if p.ndim > 1], "weight_decay": weight_decay, "lr_scale": scale},
                   {"params": [p for p in pred if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": scale}]
        return groups

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """Target projections ``[B, D]`` (no gradient)."""
        return self.target_projector(self.target_encoder(x))

    def forward(self, views: list[torch.Tensor], index: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> StepOutput:
        x1, x2 = views[0], views[1]
        p1 = self.predictor(self.projector(self.encoder(x1)))               # B x D online predictions
        p2 = self.predictor(self.projector(self.encoder(x2)))
        t1, t2 = self.targets(x1), self.targets(x2)                         # B x D target projections
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        with torch.no_grad():
            cos = torch.cat([F.cosine_similarity(p1, t2, dim=1), F.cosine_similarity(p2, t1, dim=1)])
            logs = {
                "pos_sim": cos.mean(),
                "z_std": F.normalize(t1, dim=1).std(dim=0).mean(),  # collapse monitor, 1/sqrt(D) when spread
            }
        return StepOutput(loss, logs)

    @torch.no_grad()
    def on_step_end(self, out: StepOutput, step: int, total_steps: int) -> None:
        """EMA update of the target network with the cosine momentum schedule."""
        tau = cosine_momentum(self.cfg.momentum, step, total_steps)
        ema_update(self.target_encoder, self.encoder, tau)
        ema_update(self.target_projector, self.projector, tau)
