"""GPU benchmark: SimCLR training step of a CIFAR-stem ResNet-18 at batch 512 on 32 px images.

    python -m bench.gpu [--batch 512 --width 64 --min-time 5 --no-compile --json gpu.json]

Measures, on the current CUDA device, in a few minutes:

* training images/s and peak GPU memory of ``Trainer.train_step`` (batched GPU
  augmentation included) for fp32 / bf16 autocast x NCHW / channels_last, and
  bf16 + channels_last + ``torch.compile``;
* the plain few-line PyTorch loop of ``bench.train_throughput`` in fp32 NCHW, for the ratio;
* the batched GPU augmentation alone (two SimCLR views) against per-image torchvision v2 on one CPU core;
* embedding extraction of the app (``embed_dataset``) against a bare ``model(x)`` under ``inference_mode``.

The data are 50,000 random 32x32 RGB images (CIFAR-10's shape; the content does not change the speed).
Prints a Markdown table; ``--json`` also writes the figures for ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import rate  # noqa: E402
from bench.train_throughput import plain_step, trainer_step_fn  # noqa: E402
from ssl_viz.augment import MultiViewAugment, parse_policy, v2_transform  # noqa: E402
from ssl_viz.config import TrainConfig  # noqa: E402
from ssl_viz.data import ImageDataset  # noqa: E402


def synthetic_cifar(n: int = 50_000, size: int = 32, seed: int = 0) -> ImageDataset:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    return ImageDataset("synthetic-cifar", "train", images, labels, [str(i) for i in range(10)])


def train_variants(compile_: bool) -> list[tuple[str, dict]]:
    variants = [
        ("fp32, NCHW", {"amp": False, "channels_last": False}),
        ("fp32, channels_last", {"amp": False, "channels_last": True}),
        ("bf16 autocast, NCHW", {"amp": True, "channels_last": False}),
        ("bf16 autocast, channels_last", {"amp": True, "channels_last": True}),
    ]
    if compile_:
        variants.append(("bf16, channels_last, torch.compile", {"amp": True, "channels_last": True, "compile": True}))
    return variants


def peak_memory_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bench_training(data: ImageDataset, args, device: torch.device) -> list[dict]:
    base = TrainConfig(method="simclr", encoder="resnet18-cifar", encoder_width=args.width, batch_size=args.batch, device=str(device), knn_every=0,
                       augment="simclr")  # the CIFAR-size colour policy, as recorded in bench/results/gpu-*.json
    rows = []
    for name, changes in train_variants(not args.no_compile):
        reset_peak(device)
        start = time.perf_counter()
        _, step = trainer_step_fn(replace(base, **changes), data)
        warmup = 10 if changes.get("compile") else 3
        images_s = rate(step, args.batch, device, args.min_time, warmup=warmup)
        rows.append({"variant": f"Trainer: {name}", "images_per_s": images_s, "peak_gib": peak_memory_gib(device),
                     "wall_s": time.perf_counter() - start})
        print(f"  {rows[-1]['variant']:<48}{images_s:>10,.0f} img/s  peak {rows[-1]['peak_gib']:.2f} GiB", flush=True)
    reset_peak(device)
    plain = plain_step(data, "resnet18-cifar", args.width, args.batch, device, policy="simclr")
    images_s = rate(plain, args.batch, device, args.min_time)
    rows.append({"variant": "plain PyTorch loop: fp32, NCHW", "images_per_s": images_s, "peak_gib": peak_memory_gib(device)})
    print(f"  {rows[-1]['variant']:<48}{images_s:>10,.0f} img/s  peak {rows[-1]['peak_gib']:.2f} GiB", flush=True)
    return rows


def bench_augmentation(data: ImageDataset, args, device: torch.device) -> dict:
    views = MultiViewAugment(parse_policy("simclr"), n_views=2)
    x = data.images[: args.batch].to(device).float().div(255)
    gen = torch.Generator(device=device).manual_seed(0)
    gpu = rate(lambda: views(x, generator=gen), args.batch, device, args.min_time)
    per_image = v2_transform(parse_policy("simclr"), 32)
    cpu_x = data.images[:256].float().div(255)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu = rate(lambda: [(per_image(img), per_image(img)) for img in cpu_x], 256, torch.device("cpu"), args.min_time, warmup=1)
    torch.set_num_threads(threads)
    print(f"  two SimCLR views: batched on GPU {gpu:,.0f} img/s, per-image v2 on 1 CPU core {cpu:,.0f} img/s", flush=True)
    return {"batched_gpu_images_per_s": gpu, "per_image_cpu_images_per_s": cpu}


def bench_extraction(data: ImageDataset, args, device: torch.device) -> dict:
    from bench.extraction import compare
    from ssl_viz.encoders import build_encoder

    encoder = build_encoder("resnet18-cifar", 3, args.width).to(device).eval()
    r = compare(encoder, data.images[:min(20_000, len(data))], 512, repeats=3, device=device)
    print(f"  extraction: embed_dataset {r['app_images_per_s']:,.0f} img/s, bare model(x) {r['bare_images_per_s']:,.0f} img/s, "
          f"ratio {r['ratio']:.2f}", flush=True)
    return {"embed_dataset_images_per_s": r["app_images_per_s"], "bare_images_per_s": r["bare_images_per_s"], "ratio": r["ratio"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 base width (64 is the standard model)")
    parser.add_argument("--min-time", type=float, default=5.0, help="seconds timed per variant")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to check the script itself")
    parser.add_argument("--images", type=int, default=50_000)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench.gpu needs a CUDA device; on the CPU run bench.train_throughput")
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"{card}, torch {torch.__version__}, CUDA {torch.version.cuda}, batch {args.batch}, ResNet-18 CIFAR width {args.width}", flush=True)
    data = synthetic_cifar(args.images)
    result = {"card": card, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
              "batch": args.batch, "width": args.width}
    result["training"] = bench_training(data, args, device)
    result["augmentation"] = bench_augmentation(data, args, device)
    result["extraction"] = bench_extraction(data, args, device)
    print("\n| variant | images/s | peak GPU memory (GiB) |\n| --- | ---: | ---: |")
    for row in result["training"]:
        print(f"| {row['variant']} | {row['images_per_s']:,.0f} | {row['peak_gib']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
