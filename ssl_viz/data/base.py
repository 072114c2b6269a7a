"""The one dataset interface every part of ssl-viz consumes.

All built-in datasets are small enough to live in memory as a uint8 tensor,
which makes batching a matter of indexing and lets augmentation run on whole
batches on the training device (see ``ssl_viz.augment``). A folder of your own
images is a tensor over a memory-mapped file (:mod:`ssl_viz.data.store`): the
same interface, but indexing a batch reads only that batch from disk, so code
that takes a dataset must never copy all of ``images`` (no ``.contiguous()``,
``.clone()``, ``torch.cat`` or a :meth:`ImageDataset.subset` of every row).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ImageDataset:
    """Images with integer labels and optional per-image factors.

    Attributes:
        name: registry name, e.g. ``"digits"`` or ``"folder:/data/cats"``.
        split: ``"train"``, ``"test"`` or ``"all"`` (both).
        images: uint8 tensor ``[N, C, H, W]`` with C in {1, 3} (for a folder: a view of a memory map).
        labels: int64 tensor ``[N]``; ``-1`` where an image has no label.
        class_names: ``class_names[labels[i]]`` names image i's class.
        factors: optional generative factors, each an int array ``[N]``
            (e.g. ``{"orientation": ..., "color": ...}``), with their value
            names in ``factor_names``.
        factor_names: value names per factor, ``factor_names[f][factors[f][i]]``.
        label_factor: which factor the labels come from, if any.
        names: optional str array ``[N]``, each image's file name (relative to its folder), for folder datasets.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    factor_names: dict[str, list[str]] = field(default_factory=dict)
    label_factor: str | None = None
    names: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DatasetError(f"{self.name}: images must be uint8 [N,C,H,W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.images.shape[1] not in (1, 3):
            raise DatasetError(f"{self.name}: images need 1 or 3 channels, got {self.images.shape[1]}")
        if len(self.labels) != len(self.images):
            raise DatasetError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        for key, values in self.factors.items():
            if len(values) != len(self.images):
                raise DatasetError(f"{self.name}: factor {key!r} has {len(values)} values for {len(self.images)} images")
        if self.names is not None and len(self.names) != len(self.images):
            raise DatasetError(f"{self.name}: {len(self.names)} names for {len(self.images)} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any())

    def float_images(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images as float in [0, 1], ``[n, C, H, W]``."""
        images = self.images if index is None else self.images[index]
        return images.float().div_(255.0)

    def subset(self, index: np.ndarray | torch.Tensor | list[int]) -> ImageDataset:
        """A new dataset holding only ``index`` (order kept); its images are a copy of those rows (``[len(index), C, H, W]``)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ImageDataset(
            name=self.name,
            split=self.split,
            images=self.images[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            factors={k: v[idx.numpy()] for k, v in self.factors.items()},
            factor_names=self.factor_names,
            label_factor=self.label_factor,
            names=None if self.names is None else self.names[idx.numpy()],
        )

    def relabel(self, factor: str) -> ImageDataset:
        """The same images labelled by one of their factors (``colour`` is read as ``color``)."""
        if factor not in self.factors and factor.replace("colour", "color") in self.factors:
            factor = factor.replace("colour", "color")
        if factor not in self.factors:
            raise DatasetError(f"{self.name} has no factor {factor!r}; it has: {', '.join(self.factors) or 'none'}")
        values = self.factors[factor]
        return ImageDataset(
            name=self.name,
            split=self.split,
            images=self.images,
            labels=torch.as_tensor(values, dtype=torch.long),
            class_names=list(self.factor_names[factor]),
            factors=self.factors,
            factor_names=self.factor_names,
            label_factor=factor,
            names=self.names,
        )

    def head(self, n: int, seed: int = 0) -> ImageDataset:
        """A deterministic random subset of at most ``n`` images (all if n >= len)."""
        if n >= len(self):
            return self
        gen = np.random.default_rng(seed)
        return self.subset(np.sort(gen.choice(len(self), size=n, replace=False)))


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/test index split of ``range(n)``."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])
