"""One SimCLR batch laid open: two views per image, the 2N x 2N similarities, each anchor's softmax and loss.

SimCLR (Chen et al. 2020, eq. 1): of 2N views, anchor i's positive j(i) is the
other view of the same image, every other view is a negative, and::

    p_i(k) = exp(sim(z_i, z_k) / t) / sum_{m != i} exp(sim(z_i, z_m) / t)      (k != i)
    l_i    = -log p_i(j(i))

The mean of ``l_i`` over the 2N anchors is NT-Xent (``ssl_viz.losses.nt_xent``).

Row order follows ``nt_xent``: rows ``0..N-1`` are the first views of images
``0..N-1``, rows ``N..2N-1`` their second views, so ``j(i) = (i + N) mod 2N``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ssl_viz.augment import BatchAugment
from ssl_viz.config import AugmentConfig


@dataclass
class ContrastiveBatch:
    """Everything one contrastive step sees.

    Attributes:
        images: ``[N, C, H, W]`` float in [0, 1], the originals.
        views: ``[2N, C, H, W]`` float, first views then second views.
        params: ``[params of view set 1, params of view set 2]`` as the augmentation returned them (or None).
        embeddings: ``[2N, D]`` L2-normalised embeddings of the views.
        similarity: ``[2N, 2N]`` cosine similarities (unit diagonal).
        positives: ``[2N]`` column of each anchor's positive.
        probabilities: ``[2N, 2N]`` each row's softmax over its 2N - 1 candidates (0 on the diagonal).
        losses: ``[2N]`` per-anchor InfoNCE ``-log p_i(j(i))``.
        temperature: tau.
    """

    images: torch.Tensor
    views: torch.Tensor
    params: list[Any]
    embeddings: torch.Tensor
    similarity: torch.Tensor
    positives: torch.Tensor
    probabilities: torch.Tensor
    losses: torch.Tensor
    temperature: float

    @property
    def n(self) -> int:
        """N, the number of images (the batch holds 2N views)."""
        return int(self.images.shape[0])

    @property
    def loss(self) -> float:
        """The batch's NT-Xent: the mean of the per-anchor losses."""
        return float(self.losses.mean())

    @property
    def chance_loss(self) -> float:
        """The loss of an encoder that cannot tell views apart: ``log(2N - 1)`` (uniform over the candidates)."""
        return math.log(2 * self.n - 1)

    def view_label(self, i: int) -> str:
        """Short name of row ``i``: image number (1-based) and view a/b, e.g. ``3b``."""
        return f"{i % self.n + 1}{'ab'[i // self.n]}"


def contrastive_scores(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From ``[2N, D]`` view embeddings (first views, then second views): (similarity, positives, probabilities, losses).

    ``similarity`` ``[2N, 2N]`` cosine; ``probabilities`` row-wise softmax of
    ``similarity / t`` with the anchor itself left out; ``losses`` ``[2N]``.
    """
    if z.ndim != 2 or z.shape[0] % 2 or z.shape[0] < 4:
        raise ValueError(f"need [2N, D] embeddings with N >= 2, got {tuple(z.shape)}")
    two_n = z.shape[0]
    n = two_n // 2
    zn = F.normalize(z if z.dtype == torch.float64 else z.float(), dim=1)
    sim = zn @ zn.T                                                        # 2N x 2N
    idx = torch.arange(two_n, device=z.device)
    positives = (idx + n) % two_n
    logits = (sim / temperature).masked_fill(torch.eye(two_n, dtype=torch.bool, device=z.device), float("-inf"))
    log_p = F.log_softmax(logits, dim=1)                                   # 2N x 2N, -inf on the diagonal
    losses = -log_p[idx, positives]                                        # 2N
    return sim, positives, log_p.exp(), losses


def _views(augment, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Any]:
    if augment is None:
        return x.clone(), None
    out = augment(x, generator=generator, return_params=True)
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor):
        return out
    return out, None


@torch.inference_mode()
def contrastive_batch(
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    augment: Callable | None,
    temperature: float = 0.5,
    seed: int = 0,
) -> ContrastiveBatch:
    """Make two views of each image, embed them, and score the batch as SimCLR does.

    Args:
        embed_fn: images ``[B, C, H, W]`` in [0, 1] -> ``[B, D]`` (e.g. ``LoadedModel.embed_fn("projector")``).
        images: ``[N, C, H, W]`` uint8 or float in [0, 1], N >= 2.
        augment: a batch augmentation called as ``augment(x, generator=g, return_params=True)``
            -> ``(views, params)`` (``ssl_viz.augment.BatchAugment``); None uses the images as they are.
        temperature: tau.
        seed: seeds the generator, so the same seed gives the same views.
    """
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    if x.ndim != 4 or len(x) < 2:
        raise ValueError(f"need at least 2 images [N, C, H, W], got {tuple(x.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    v1, p1 = _views(augment, x, gen)
    v2, p2 = _views(augment, x, gen)
    views = torch.cat([v1, v2]).clamp(0, 1)
    z = embed_fn(views).float()
    sim, positives, probs, losses = contrastive_scores(z, temperature)
    return ContrastiveBatch(x, views, [p1, p2], F.normalize(z, dim=1), sim, positives, probs, losses, float(temperature))


def random_batch(n_total: int, batch_size: int, seed: int = 0) -> torch.Tensor:
    """``min(batch_size, n_total)`` distinct indices of ``range(n_total)`` (int64, random order), the same for the same seed."""
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(int(seed)))[:batch_size]


def sampled_contrastive_batch(embed_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, n: int,
                              policy: AugmentConfig, temperature: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, ContrastiveBatch]:
    """:func:`contrastive_batch` of ``n`` images drawn from ``images [M, C, H, W]`` with :func:`random_batch` (``seed``).

    Views come from ``BatchAugment(policy)`` seeded with ``seed`` too. Returns (the drawn indices ``[n]`` into
    ``images``, the batch). Raises ValueError for fewer than 2 images or an invalid policy.
    """
    pick = random_batch(len(images), n, seed)
    return pick, contrastive_batch(embed_fn, images[pick], BatchAugment(policy), temperature=temperature, seed=int(seed))


@torch.inference_mode()
def view_alignment(embed_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, augment: Callable, seed: int = 0) -> float:
    """Alignment (Wang & Isola 2020) of two augmented views of each image: ``E ||z1/|z1| - z2/|z2| ||^2``.

    Lower is better: positives land close together. ``images`` ``[N, C, H, W]`` uint8 or float in [0, 1].
    """
    from ssl_viz.evaluate import alignment

    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    gen = torch.Generator().manual_seed(int(seed))
    v1, v2 = augment(x, generator=gen), augment(x, generator=gen)
    return alignment(embed_fn(v1.clamp(0, 1)), embed_fn(v2.clamp(0, 1)))
