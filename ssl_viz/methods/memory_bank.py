"""Instance discrimination with a memory bank (InstDisc; Wu et al. 2018, "Unsupervised
Feature Learning via Non-Parametric Instance Discrimination")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssl_viz.config import MethodConfig
from ssl_viz.encoders import Encoder
from ssl_viz.losses import contrastive_loss, info_nce_logits, nce, nce_z_estimate
from ssl_viz.methods.base import SSLMethod, StepOutput, draw_generator, gather_no_grad


class MemoryBank(SSLMethod):
    """Every image is its own class; a bank ``V`` ``[n, D]`` keeps one normalised
    embedding per dataset image, used as its "class weight" and as negatives.

    * Embedding: ``f = normalise(g(f(x)))`` of each view; the loss is averaged over
      the views, each view compared with the bank (InstDisc itself uses one view).
    * ``cfg.bank_loss == "infonce"``: the non-parametric softmax of eq. 2,
      ``P(i|f) = exp(v_i.f / t) / sum_j exp(v_j.f / t)``, as InfoNCE with the
      sample's own entry ``v_i`` as the positive. When the bank holds more than
      ``cfg.nce_negatives + 1`` entries the sum runs over ``cfg.nce_negatives``
      entries drawn uniformly for speed, else over the whole bank.
    * ``cfg.bank_loss == "nce"``: noise-contrastive estimation (eq. 5-7) with
      ``m = cfg.nce_negatives`` uniform noise samples; the partition function Z is
      estimated on the first batch and then kept constant (buffer ``nce_z``), as in
      the paper.
    * Bank update (the momentum form of the authors' code; Sec. 3.1 writes
      ``v_i <- f_i``), in :meth:`on_step_end`:
      ``v_i <- normalise(m v_i + (1 - m) f_i)`` with ``m = cfg.bank_momentum`` and
      ``f_i`` the normalised mean of the views' embeddings.

    Sampled negatives are drawn once per batch, from the ``generator`` passed to
    ``forward`` (never the global RNG), and shared by its queries (``[m, D]``
    instead of ``[B, m, D]``, like a MoCo queue); an entry that is the query's own
    is masked out of its negatives.

    Needs ``index`` (dataset indices) in ``forward``; under DDP indices and
    embeddings are gathered so every rank keeps the same bank.
    """

    name = "memory_bank"
    description = "InstDisc: memory bank of one embedding per image, NCE / non-parametric softmax (Wu et al. 2018)"

    def __init__(self, encoder: Encoder, cfg: MethodConfig, num_samples: int = 0) -> None:
        super().__init__(encoder, cfg, num_samples)
        if num_samples < 2:
            raise ValueError(f"memory_bank keeps one bank entry per training image and needs at least 2 images "
                             f"(negatives are the other entries), got {num_samples}")
        if cfg.bank_loss not in ("nce", "infonce"):
            raise ValueError(f"bank_loss must be 'nce' or 'infonce', got {cfg.bank_loss!r}")
        self.register_buffer("bank", F.normalize(torch.randn(num_samples, cfg.proj_dim), dim=1))   # n x D
        self.register_buffer("nce_z", torch.tensor(-1.0))    # < 0: not estimated yet

    def _num_negatives(self) -> int:
        """Sampled negatives per batch, or 0 for the whole bank (infonce only)."""
        n, m = self.num_samples, self.cfg.nce_negatives
        if self.cfg.bank_loss == "nce":
            return max(1, min(m, n - 1))
        return 0 if m <= 0 or m >= n - 1 else m

    def forward(self, views: list[torch.Tensor], index: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> StepOutput:
        index = index.to(self.bank.device).long()
        m = self._num_negatives()
        if m:   # m entries drawn uniformly (P_n = 1/n) from ``generator``, shared by the batch's queries
            gen = draw_generator(generator)
            neg_idx = torch.randint(0, self.num_samples, (m,), generator=gen, device=gen.device).to(index.device)
            negatives = self.bank[neg_idx]                                # m x D
        else:   # the whole bank
            neg_idx = torch.arange(self.num_samples, device=index.device)
            negatives = self.bank                                         # n x D
        own = neg_idx.unsqueeze(0) == index.unsqueeze(1)                  # B x M: a query's own entry is no negative
        v_pos = self.bank[index]                                          # B x D, each sample's own entry
        t = self.cfg.temperature
        feats, losses, pos_sims, neg_sims, accs, state = [], [], [], [], [], {}
        for x in views:
            f = F.normalize(self.projector(self.encoder(x)), dim=1)      # B x D
            feats.append(f)
            # logits: Bx(1+M), the sample's own bank entry in column 0; masked entries are -inf
            logits = info_nce_logits(f, v_pos, negatives, t, negative_mask=own)
            if self.cfg.bank_loss == "nce":
                z = self.nce_z if self.nce_z > 0 else nce_z_estimate(logits[:, 1:][~own].detach(), self.num_samples)
                state["nce_z"] = z.detach()                               # fixes Z in on_step_end (first step)
                loss = nce(logits[:, 0], logits[:, 1:], self.num_samples, z)   # -inf logits add log(1 - 0) = 0
            else:
                loss = contrastive_loss(logits, t, self.cfg.debiased_tau_plus, negative_mask=own)
            losses.append(loss)
            with torch.no_grad():
                pos_sims.append(logits[:, 0].mean() * t)
                neg_sims.append(logits[:, 1:][~own].mean() * t)
                accs.append((logits.argmax(dim=1) == 0).float().mean())
        loss = torch.stack(losses).mean()
        state.update(index=index, features=F.normalize(torch.stack(feats).mean(dim=0), dim=1).detach())   # [B], B x D
        logs = {
            "pos_sim": torch.stack(pos_sims).mean(),
            "neg_sim": torch.stack(neg_sims).mean(),
            "acc": torch.stack(accs).mean(),
        }
        return StepOutput(loss, logs, state)

    @torch.no_grad()
    def on_step_end(self, out: StepOutput, step: int, total_steps: int) -> None:
        """Write this step's embeddings (``out.state["index"]``, ``["features"]``) into the bank
        (and fix Z from ``out.state["nce_z"]`` after the first step)."""
        z = out.state.get("nce_z")
        if z is not None and self.nce_z <= 0:
            self.nce_z.copy_(z)
        if "index" not in out.state:
            return
        index, f = out.state["index"], out.state["features"]
        index, f = gather_no_grad(index), gather_no_grad(f)
        mom = self.cfg.bank_momentum
        v = F.normalize(mom * self.bank[index] + (1.0 - mom) * f.to(self.bank.dtype), dim=1)
        self.bank.index_copy_(0, index, v)
