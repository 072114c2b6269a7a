"""Quality numbers of one sample of embeddings, as the Embeddings page shows them beside its map.

* kNN top-1: weighted kNN (k = 200, T = 0.1, as :func:`ssl_viz.evaluate.knn_accuracy`) with
  the even rows of the sample as the bank and the odd rows as the queries;
* uniformity (Wang & Isola 2020, "Understanding Contrastive Representation Learning through
  Alignment and Uniformity on the Hypersphere"): ``log E exp(-2 ||z_i - z_j||^2)`` on unit vectors,
  lower = more spread out;
* alignment (same paper): ``E ||z1/|z1| - z2/|z2| ||^2`` of two augmented views of each image,
  lower = positives land closer together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ssl_viz.analysis.pairs import view_alignment
from ssl_viz.augment import POLICIES, BatchAugment
from ssl_viz.evaluate import KNN_K, knn_accuracy, uniformity

MIN_POINTS = 20          # fewer embeddings than this: the numbers are too noisy to show
UNIFORMITY_POINTS = 2000  # uniformity on at most this many rows (pairwise distances are quadratic)
ALIGNMENT_IMAGES = 256    # alignment on the views of at most this many images


@dataclass
class EmbeddingMetrics:
    """Attributes: ``knn_top1`` (None without labels), ``uniformity``, ``alignment`` (None without an encoder)."""

    knn_top1: float | None
    uniformity: float
    alignment: float | None


def embedding_metrics(embeddings, labels=None, embed_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      images: torch.Tensor | None = None, indices=None, policy: str = "simclr") -> EmbeddingMetrics:
    """kNN top-1 (half / half of the sample), uniformity and view alignment of one sample.

    Args:
        embeddings: ``[N, D]`` (numpy or torch), N >= 2 (the page shows them from :data:`MIN_POINTS`).
        labels: ``[N]`` class ids of the rows, or None (no kNN accuracy).
        embed_fn: images ``[B, C, H, W]`` in [0, 1] -> ``[B, D]``; with ``images`` it gives the alignment.
        images: ``[M, C, H, W]`` uint8 or float in [0, 1], e.g. a whole dataset's images.
        indices: ``[N]`` the rows of ``images`` that were embedded (default: its first N rows); the views of
            the first :data:`ALIGNMENT_IMAGES` of them give the alignment.
        policy: name in :data:`ssl_viz.augment.POLICIES` of the two views' augmentation.

    Raises KeyError for an unknown policy name.
    """
    z = torch.as_tensor(embeddings)
    knn = None
    if labels is not None:
        lab = torch.as_tensor(labels)
        knn = knn_accuracy(z[0::2], lab[0::2], z[1::2], lab[1::2], k=min(KNN_K, len(z) // 2))
    unif = uniformity(z, max_points=UNIFORMITY_POINTS)
    align = None
    if embed_fn is not None and images is not None:
        rows = indices[:ALIGNMENT_IMAGES] if indices is not None else slice(0, min(ALIGNMENT_IMAGES, len(z)))
        align = view_alignment(embed_fn, images[rows], BatchAugment(POLICIES[policy]))
    return EmbeddingMetrics(knn, unif, align)
