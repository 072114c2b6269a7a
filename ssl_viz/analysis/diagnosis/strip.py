"""Before / after examples of one augmentation at one strength, a few per class, to judge a verdict by eye."""

from __future__ import annotations

import numpy as np
import torch

from ssl_viz.augment import BatchAugment, dose_transform
from ssl_viz.data import ImageDataset


def example_indices(labels: torch.Tensor, per_class: int = 2, seed: int = 0, max_classes: int = 10) -> list[int]:
    """``per_class`` image indices of each of the first ``max_classes`` classes present, class by class (seeded choice)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    picked: list[int] = []
    for c in sorted({int(v) for v in labels.tolist() if v >= 0})[:max_classes]:
        picked += [int(i) for i in order[labels[order] == c][:per_class]]
    return picked


def _hwc(x: torch.Tensor, min_side: int) -> np.ndarray:
    """``[N, C, H, W]`` float in [0, 1] -> uint8 ``[N, H', W', 3]`` (gray replicated; nearest-neighbour enlarged to >= min_side)."""
    factor = max(1, -(-min_side // min(x.shape[-2:])))
    if factor > 1:
        x = x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def example_strip(ds: ImageDataset, name: str, strength: float, per_class: int = 2, seed: int = 0,
                  min_side: int = 64, max_classes: int = 10) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A few images per class before and after augmentation ``name`` at dose ``strength``.

    The transform is :func:`~ssl_viz.augment.dose_transform` (for flip, grayscale and rotate90 the strength
    is the probability, so some "after" images may be unchanged), drawn from a generator seeded with ``seed``.

    Returns:
        ``(before, after, captions)``: two uint8 arrays ``[n, H', W', 3]`` (HWC, grayscale replicated to
        RGB, enlarged by an integer nearest-neighbour factor to at least ``min_side`` pixels; ``after`` has
        the same size as ``before``) and ``n`` captions, the class name of each image; ``n = per_class`` x
        the number of classes shown (at most ``max_classes``), images grouped class by class.

    Raises ValueError for an unknown augmentation, a strength outside (0, 1] or an unlabelled dataset.
    """
    if not ds.has_labels:
        raise ValueError(f"{ds.name} has no labels: the examples are shown per class")
    cfg = dose_transform(name, strength)
    idx = example_indices(ds.labels, per_class, seed, max_classes)
    x = ds.float_images(torch.as_tensor(idx, dtype=torch.long))
    after = BatchAugment(cfg)(x, torch.Generator().manual_seed(seed))
    names = list(ds.class_names)
    captions = [names[int(ds.labels[i])] if int(ds.labels[i]) < len(names) else str(int(ds.labels[i])) for i in idx]
    return _hwc(x, min_side), _hwc(after, min_side), captions
