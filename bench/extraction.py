"""Embedding extraction: the app's path (``embed_dataset``) against a bare ``model(x)`` under ``inference_mode``.

    python -m bench.extraction [--model models/simclr-fashion-mnist --n 10000 --batch 256]

Both embed the same ``n`` Fashion-MNIST test images with the same encoder and batch size.
The bare loop gets its batches already converted to float (its data preparation is not timed);
the app's path converts uint8 batches itself and reports progress, as the pages do.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import sync  # noqa: E402
from ssl_viz.checkpoint import load_model  # noqa: E402
from ssl_viz.data import load_dataset  # noqa: E402
from ssl_viz.evaluate import embed_dataset  # noqa: E402
from ssl_viz.paths import models_dir  # noqa: E402


def best_rate(fn, n: int, repeats: int, device: torch.device) -> float:
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return n / best


def compare(encoder: torch.nn.Module, images: torch.Tensor, batch: int, repeats: int, device: torch.device = torch.device("cpu")) -> dict:
    """images/s of the app's ``embed_dataset`` and of a bare ``encoder(x)`` loop over pre-converted batches, and their ratio."""
    batches = [images[i:i + batch].to(device).float().div(255) for i in range(0, len(images), batch)]

    def bare() -> None:
        with torch.inference_mode():
            for b in batches:
                encoder(b)

    bare_rate = best_rate(bare, len(images), repeats, device)
    app_rate = best_rate(lambda: embed_dataset(encoder, images, batch_size=batch, device=device, progress=lambda f: None),
                         len(images), repeats, device)
    return {"n": len(images), "batch": batch, "app_images_per_s": app_rate, "bare_images_per_s": bare_rate, "ratio": app_rate / bare_rate}


def measure(model_dir: Path, n: int, batch: int, repeats: int) -> dict:
    """:func:`compare` for a saved model on ``n`` test images of its dataset."""
    model = load_model(model_dir)
    images = load_dataset(model.card.get("dataset", "fashion-mnist"), "test").images[:n]
    return {"model": model.name, **compare(model.embed_fn("backbone").eval(), images, batch, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=models_dir() / "simclr-fashion-mnist")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    r = measure(args.model, args.n, args.batch, args.repeats)
    print(f"{r['model']}: {r['n']} images, batch {r['batch']}, {torch.get_num_threads()} threads")
    print(f"  embed_dataset (app) {r['app_images_per_s']:>9,.0f} img/s\n  bare model(x)       {r['bare_images_per_s']:>9,.0f} img/s\n"
          f"  ratio {r['ratio']:.2f}")


if __name__ == "__main__":
    main()
