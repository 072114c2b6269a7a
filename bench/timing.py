"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(step: Callable[[], object], images_per_step: int, device: torch.device, min_time: float, warmup: int = 3) -> float:
    """Images/s of ``step()`` after ``warmup`` calls, timed for at least ``min_time`` seconds."""
    for _ in range(warmup):
        step()
    sync(device)
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        if n % 5 == 0 or device.type != "cuda":
            sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                return n * images_per_step / elapsed
