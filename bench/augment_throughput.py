"""Throughput of BatchAugment (whole batch, tensor ops) vs per-image torchvision v2.

    python bench/augment_throughput.py [--batch 512] [--policies simclr,simclr-strong] [--device cpu|cuda] [--threads 1]

Prints images/s for a batch of random RGB images at 28 and 32 pixels. Figures, not a test.
On a busy machine use ``--threads 1``: OpenMP threads that wait for a busy core
make small-tensor ops (both paths) many times slower.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import rate  # noqa: E402
from ssl_viz.augment import BatchAugment, parse_policy, v2_transform  # noqa: E402


def images_per_second(fn, n_images: int, device: torch.device, min_time: float = 1.0) -> float:
    """Run ``fn`` (one pass over ``n_images``) after a warm-up until ``min_time`` s have passed."""
    return rate(fn, n_images, device, min_time, warmup=1)


def _per_image(transform, images: torch.Tensor) -> list[torch.Tensor]:
    return [transform(img) for img in images]


def measure(batch: int = 512, sizes=(28, 32), policies=("simclr",), device: str = "cpu", min_time: float = 1.0) -> list[dict]:
    """images/s of BatchAugment and of the per-image v2 pipeline for each policy and image size."""
    dev = torch.device(device)
    rows = []
    for size in sizes:
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        x_dev = x.to(dev)
        for name in policies:
            cfg = parse_policy(name)
            aug, gen = BatchAugment(cfg), torch.Generator(device=dev).manual_seed(0)
            fast = images_per_second(partial(aug, x_dev, gen), batch, dev, min_time)
            slow = images_per_second(partial(_per_image, v2_transform(cfg, size), x), batch, torch.device("cpu"), min_time)
            rows.append({"policy": name, "size": size, "batched": fast, "per_image": slow, "speedup": fast / slow})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--sizes", default="28,32")
    parser.add_argument("--policies", default="simclr,simclr-strong,geometric,context")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, batch {args.batch}")
    print(f"{'policy':<16}{'size':>5}{'BatchAugment img/s':>22}{'v2 per-image img/s':>22}{'speed-up':>10}")
    rows = measure(args.batch, [int(s) for s in args.sizes.split(",")], args.policies.split(","), args.device, args.min_time)
    for r in rows:
        print(f"{r['policy']:<16}{r['size']:>5}{r['batched']:>22,.0f}{r['per_image']:>22,.0f}{r['speedup']:>9.1f}x")


if __name__ == "__main__":
    main()
