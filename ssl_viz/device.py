"""Where computation runs: device choice, backend switches, and the distributed process group.

The one place that reads ``LOCAL_RANK`` / ``WORLD_SIZE`` / ``RANK`` (set by ``torchrun``)
and calls ``torch.distributed.init_process_group``; the trainer and the CLI ask here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda (this process's ``LOCAL_RANK`` GPU), then mps, then cpu; any other name is used as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def configure_backend(device: torch.device) -> None:
    """Fast kernels for fixed-shape training on CUDA: cuDNN autotuning and TF32 matmuls/convolutions (no-op elsewhere)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def device_name(device: torch.device) -> str:
    """A human name for ``device``: the card's model on CUDA, else the device type (``cpu``, ``mps``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job: ``rank`` of ``world`` processes (0 of 1 when alone)."""

    enabled: bool
    rank: int
    world: int


def launched_distributed() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process (``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's global rank as ``torchrun`` set it (0 when not distributed), readable before the group exists."""
    return int(os.environ.get("RANK", "0"))


def rank_device(device: torch.device) -> torch.device:
    """``device`` for this ``torchrun`` process: a bare ``cuda`` becomes this process's ``LOCAL_RANK`` GPU
    (so that N processes use N GPUs, as ``auto`` does); any other device is returned as given."""
    if device.type == "cuda" and device.index is None and launched_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def init_distributed(backend: str | None = None, timeout: timedelta | None = None) -> Distributed:
    """Join the process group when launched by ``torchrun``; idempotent.

    ``backend`` None: NCCL when CUDA is available, else gloo (training); ``embed`` names the one its device
    needs. ``timeout``: how long a collective may wait for the slowest rank (None: torch's default).
    """
    if not launched_distributed():
        return Distributed(False, 0, 1)
    if not dist.is_initialized():
        extra = {} if timeout is None else {"timeout": timeout}
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"), **extra)
    return Distributed(True, dist.get_rank(), dist.get_world_size())


def shutdown_distributed() -> None:
    """Leave the process group if one is open."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
