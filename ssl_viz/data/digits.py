"""scikit-learn's 8x8 handwritten digits: always offline, the tests' workhorse."""

from __future__ import annotations

import numpy as np
import torch

from ssl_viz.data.base import ImageDataset, split_indices


def load(split: str = "train", test_fraction: float = 0.25, seed: int = 0) -> ImageDataset:
    """1797 grayscale digits, pixel values 0..16 rescaled to uint8, ``[N, 1, 8, 8]``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(bunch.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    train_idx, test_idx = split_indices(len(images), test_fraction, seed)
    idx = train_idx if split == "train" else test_idx
    return ImageDataset(
        name="digits",
        split=split,
        images=torch.from_numpy(images[idx]).unsqueeze(1).contiguous(),
        labels=torch.from_numpy(bunch.target[idx].astype(np.int64)),
        class_names=[str(i) for i in range(10)],
    )
