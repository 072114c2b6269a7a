"""Your own images at real size: a generated folder of colour photographs through the on-disk image store.

    python -m bench.image_store [--n 100000] [--size 64] [--folder /tmp/ssl-viz-folder-100k] [--min-time 20]

The folder is made once (and reused) from the scikit-image photographs, nothing downloaded: eight colour
photographs (astronaut, chelsea, coffee, rocket, hubble_deep_field, immunohistochemistry, colorwheel, retina),
one class each, cut into random crops of 10-60 % of the side, resized to ``--size`` px and saved as JPEG
(quality 90) in ImageFolder layout. Then, each phase in a fresh process with an empty store cache
(``SSL_VIZ_CACHE`` in a temporary folder):

* ``decode``: the first ``load_dataset("folder:PATH", "all")``: every file listed, decoded in threads and written
  into the memory-mapped store (images/s, the store's size on disk, the process's peak resident memory);
* ``reopen``: the same call in a new process (the folder listed and stat'ed, the store mapped: no image read);
* ``train``: SimCLR ``Trainer.train_step`` images/s (the Train page's suggested recipe for the size; 64 px: the default) with the training split read from
  the store's memory map, against the same images copied into RAM first (``ratio`` = store / RAM), and the peak
  resident memory of the store-backed process;
* ``embed``: ``embed_dataset`` of all images with that recipe's encoder (images/s).

Prints one JSON line per phase and a Markdown table for ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel", "retina")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _write_part(args: tuple[str, int, int, int, int]) -> int:
    """Write images ``start..stop`` of the folder (class = photograph, round robin); returns how many."""
    import skimage.data
    from PIL import Image

    folder, start, stop, size, seed = args
    photos = [Image.fromarray(getattr(skimage.data, name)()[..., :3]) for name in PHOTOS]
    rng = np.random.default_rng(seed + start)
    for i in range(start, stop):
        c = i % len(PHOTOS)
        img = photos[c]
        side = int(min(img.size) * rng.uniform(0.1, 0.6))
        x, y = rng.integers(0, img.size[0] - side + 1), rng.integers(0, img.size[1] - side + 1)
        crop = img.crop((int(x), int(y), int(x) + side, int(y) + side)).resize((size, size), Image.BILINEAR)
        crop.save(Path(folder) / PHOTOS[c] / f"{i:06d}.jpg", quality=90)
    return stop - start


def make_folder(folder: Path, n: int, size: int, workers: int = 2, seed: int = 0) -> float:
    """Write the folder unless it already holds ``n`` images; returns the seconds spent writing (0 when reused)."""
    from multiprocessing import Pool

    stamp = folder / f".complete-{n}-{size}"
    if stamp.exists():
        return 0.0
    for name in PHOTOS:
        (folder / name).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bounds = np.linspace(0, n, 4 * workers + 1).astype(int)
    with Pool(workers) as pool:
        done = sum(pool.map(_write_part, [(str(folder), int(a), int(b), size, seed) for a, b in zip(bounds[:-1], bounds[1:])]))
    assert done == n
    stamp.touch()
    return time.perf_counter() - start


def phase(name: str, folder: str, size: int, min_time: float) -> dict:
    """Run one phase in this (fresh) process; returns its figures."""
    import torch

    from ssl_viz.data import load_dataset

    out: dict = {"phase": name}
    start = time.perf_counter()
    data = load_dataset(f"folder:{folder}", "all", size=size)
    out["load_s"] = time.perf_counter() - start
    out["images"] = len(data)
    if name == "decode":
        from ssl_viz.data import folder as folder_loader

        out["images_per_s"] = len(data) / out["load_s"]
        out["store_mib"] = folder_loader.last_report.disk_bytes / 2**20 if folder_loader.last_report else None
    elif name == "train":
        from bench.timing import rate
        from ssl_viz.config import TrainConfig
        from ssl_viz.train import Trainer

        train = load_dataset(f"folder:{folder}", "train", size=size)
        from ssl_viz.config import suggested_recipe

        r = suggested_recipe(size, "cpu")  # the Train page's suggestion for this size (64 px: the default recipe)
        cfg = TrainConfig(dataset=f"folder:{folder}", knn_every=0, image_size=size, encoder=r.encoder, encoder_width=r.encoder_width,
                          batch_size=r.batch_size, lr=r.lr)
        out["encoder"] = f"{r.encoder} width {r.encoder_width}" if r.encoder in ("small-cnn", "resnet18-cifar") else r.encoder
        with tempfile.TemporaryDirectory() as tmp:
            ram = None
            for source in ("store", "ram", "store", "ram"):  # interleaved, best of two: drifts in machine speed hit both
                if source == "ram" and ram is None:
                    ram = _in_ram(train)  # only after the first store-backed run has set its peak
                trainer = Trainer.from_config(cfg, tmp, callbacks=[], dataset=train if source == "store" else ram)
                batches = trainer.batches()
                got = rate(lambda t=trainer, b=batches: t.train_step(next(b)), cfg.batch_size, torch.device("cpu"), min_time / 2)
                out[f"{source}_images_per_s"] = max(got, out.get(f"{source}_images_per_s", 0.0))
                if source == "store" and "store_peak_rss_mib" not in out:
                    out["store_peak_rss_mib"] = _peak_rss_mib()  # the store-backed run's peak, before any RAM copy
        out["ratio"] = out["store_images_per_s"] / out["ram_images_per_s"]
        out["train_images"] = len(train)
        out["batch_size"] = cfg.batch_size
    elif name == "embed":
        from ssl_viz.config import TrainConfig, suggested_recipe
        from ssl_viz.encoders import build_encoder
        from ssl_viz.evaluate import embed_dataset

        r = suggested_recipe(size, "cpu")  # the encoder the training phase trains
        encoder = build_encoder(r.encoder, data.channels, r.encoder_width).eval()
        out["encoder"] = f"{r.encoder} width {r.encoder_width}" if r.encoder in ("small-cnn", "resnet18-cifar") else r.encoder
        start = time.perf_counter()
        with torch.inference_mode():
            z = embed_dataset(encoder, data.images, batch_size=512)
        out["embed_s"] = time.perf_counter() - start
        out["images_per_s"] = len(data) / out["embed_s"]
        out["dims"] = int(z.shape[1])
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def _in_ram(ds):
    """The same dataset with its images copied out of the memory map into RAM."""
    from dataclasses import replace

    return replace(ds, images=ds.images.clone())


def run_phase(name: str, folder: Path, size: int, cache: Path, min_time: float) -> dict:
    cmd = [sys.executable, "-m", "bench.image_store", "--phase", name, "--folder", str(folder), "--size", str(size), "--min-time", str(min_time)]
    env = {**os.environ, "SSL_VIZ_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def table(n: int, size: int, made_s: float, rows: dict) -> str:
    d, r, t, e = rows["decode"], rows["reopen"], rows["train"], rows["embed"]
    lines = [
        f"Folder: {n:,} JPEG colour images of {size} px in 8 classes (scikit-image photographs, random crops); "
        + (f"written in {made_s:.0f} s." if made_s else "reused."),
        "",
        "| phase | figure | peak resident memory (MiB) |",
        "| --- | --- | ---: |",
        f"| first load (decode into the store) | {d['load_s']:.1f} s, **{d['images_per_s']:,.0f} images/s**, "
        f"store {d['store_mib']:,.0f} MiB on disk | {d['peak_rss_mib']:,.0f} |",
        f"| re-open in a new process | **{r['load_s']:.2f} s** | {r['peak_rss_mib']:,.0f} |",
        f"| SimCLR training from the store ({t['train_images']:,} train images, batch {t['batch_size']}) "
        f"| {t['store_images_per_s']:,.0f} images/s | {t['store_peak_rss_mib']:,.0f} |",
        f"| the same, images copied into RAM | {t['ram_images_per_s']:,.0f} images/s; **ratio store / RAM {t['ratio']:.2f}** | {t['peak_rss_mib']:,.0f} |",
        f"| embedding all {e['images']:,} ({e['encoder']}, batch 512) "
        f"| {e['embed_s']:.1f} s, **{e['images_per_s']:,.0f} images/s** | {e['peak_rss_mib']:,.0f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "ssl-viz-folder-100k")
    parser.add_argument("--min-time", type=float, default=20.0, help="seconds each training throughput is timed")
    parser.add_argument("--phases", default="decode,reopen,train,embed", help="which phases to run, in order (comma-separated)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(phase(args.phase, str(args.folder), args.size, args.min_time)))
        return 0
    made = make_folder(args.folder, args.n, args.size)
    print(json.dumps({"folder": str(args.folder), "written_s": made}), flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as cache:
        for name in args.phases.split(","):
            rows[name] = run_phase(name, args.folder, args.size, Path(cache), args.min_time)
            print(json.dumps(rows[name]), flush=True)
    if {"decode", "reopen", "train", "embed"} <= set(rows):
        print(table(args.n, args.size, made, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
