"""SSL methods by name. The UI's method picker is ``list(METHODS)``.

>>> method = build_method("moco", build_encoder("small-cnn", in_channels=1), MethodConfig(), num_samples=1000, num_classes=10)
"""

from __future__ import annotations

from ssl_viz.config import MethodConfig
from ssl_viz.encoders import Encoder
from ssl_viz.methods.base import SSLMethod, StepOutput
from ssl_viz.methods.byol import BYOL
from ssl_viz.methods.memory_bank import MemoryBank
from ssl_viz.methods.moco import MoCo
from ssl_viz.methods.simclr import SimCLR
from ssl_viz.methods.supervised import Supervised
from ssl_viz.methods.swav import SwAV

METHODS: dict[str, type[SSLMethod]] = {
    "simclr": SimCLR,
    "memory_bank": MemoryBank,
    "moco": MoCo,
    "swav": SwAV,
    "byol": BYOL,
    "supervised": Supervised,
}

__all__ = ["BYOL", "METHODS", "MemoryBank", "MoCo", "SSLMethod", "SimCLR", "StepOutput", "Supervised", "SwAV", "build_method"]


def build_method(name: str, encoder: Encoder, cfg: MethodConfig, num_samples: int = 0, num_classes: int = 0) -> SSLMethod:
    """Method ``name`` around ``encoder``.

    Args:
        name: a key of :data:`METHODS`.
        encoder: the backbone f.
        cfg: hyper-parameters (each method reads the fields it needs).
        num_samples: dataset size (the memory bank keeps one entry per image).
        num_classes: number of classes (the supervised baseline only).
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    cls = METHODS[name]
    if cls.needs_labels:
        return cls(encoder, cfg, num_samples, num_classes=num_classes)
    return cls(encoder, cfg, num_samples)
