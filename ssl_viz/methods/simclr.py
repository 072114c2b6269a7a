"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssl_viz.losses import contrastive_loss, nt_xent_logits
from ssl_viz.methods.base import SSLMethod, StepOutput, gather_with_grad, rank


class SimCLR(SSLMethod):
    """z = g(f(x)) for two views of each image; NT-Xent over the 2N views.

    Every other view in the (global) batch is a negative. Under DDP the
    projections of all ranks are gathered with gradients, the anchors stay the
    local rows, and this rank's positives sit at offset ``rank * N`` of the
    gathered batch.
    """

    name = "simclr"
    description = "SimCLR: two views, NT-Xent with in-batch negatives (Chen et al. 2020)"

    def forward(self, views: list[torch.Tensor], index: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> StepOutput:
        x1, x2 = views[0], views[1]
        z1 = self.projector(self.encoder(x1))                                   # N x D
        z2 = self.projector(self.encoder(x2))                                   # N x D
        z1_all, z2_all = gather_with_grad(z1), gather_with_grad(z2)             # N_all x D
        t = self.cfg.temperature
        # logits: 2N x (1 + 2N_all - 2), positive in column 0
        logits = nt_xent_logits(z1, z2, t, z1_all, z2_all, offset=rank() * z1.shape[0])
        loss = contrastive_loss(logits, t, self.cfg.debiased_tau_plus)
        with torch.no_grad():
            cos = logits.detach() * t
            logs = {
                "pos_sim": cos[:, 0].mean(),
                "neg_sim": cos[:, 1:].mean(),
                "acc": (logits.argmax(dim=1) == 0).float().mean(),
                "z_std": F.normalize(z1.detach(), dim=1).std(dim=0).mean(),
            }
        return StepOutput(loss, logs)
