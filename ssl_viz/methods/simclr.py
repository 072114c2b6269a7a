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

    Multi-crop (Caron et al. 2020, "Unsupervised Learning of Visual Features by
    Contrasting Cluster Assignments", Sec. 3.2, applied to SimCLR as in its
    Fig. 3): with ``V > 2`` views (two large crops first, then small ones) the
    loss is the mean NT-Xent over the pairs (large 1, large 2) and (large i,
    small j), ``1 + 2 (V - 2)`` pairs, each with its own in-batch negatives;
    small crops are not paired with each other.
    """

    name = "simclr"
    description = "SimCLR: two views, NT-Xent with in-batch negatives (Chen et al. 2020)"
    supports_small_crops = True

    def pair_logits(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """NT-Xent logits ``[2N, 1 + 2N_all - 2]`` of one pair of views' projections ``[N, D]`` (gathered under DDP)."""
        return nt_xent_logits(z1, z2, self.cfg.temperature, gather_with_grad(z1), gather_with_grad(z2), offset=rank() * z1.shape[0])

    def forward(self, views: list[torch.Tensor], index: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> StepOutput:
        if len(views) < 2:
            raise ValueError(f"simclr needs at least 2 views, got {len(views)}")
        zs = [self.projector(self.encoder(x)) for x in views]                 # V x [N x D]
        t = self.cfg.temperature
        pairs = [(0, 1)] + [(i, j) for j in range(2, len(zs)) for i in (0, 1)]
        logits = self.pair_logits(zs[0], zs[1])                               # 2N x (1 + 2N_all - 2), positive in column 0
        loss = contrastive_loss(logits, t, self.cfg.debiased_tau_plus)
        for i, j in pairs[1:]:
            loss = loss + contrastive_loss(self.pair_logits(zs[i], zs[j]), t, self.cfg.debiased_tau_plus)
        loss = loss / len(pairs)
        with torch.no_grad():
            cos = logits.detach() * t
            logs = {
                "pos_sim": cos[:, 0].mean(),
                "neg_sim": cos[:, 1:].mean(),
                "acc": (logits.argmax(dim=1) == 0).float().mean(),
                "z_std": F.normalize(zs[0].detach(), dim=1).std(dim=0).mean(),
            }
        return StepOutput(loss, logs)
