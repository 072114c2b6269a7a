"""Training throughput and step memory per encoder and image size: the figures behind ``ssl_viz.config.suggested_recipe``.

    python -m bench.image_sizes [--sizes 32,64,96,128,224] [--encoders small-cnn,resnet18-cifar,resnet18,mobilenet_v2]
                                [--batch 32] [--steps 3] [--threads 1] [--device cpu] [--json bench/results/image-sizes-cpu.jsonl]

Each (encoder, size) runs in a fresh process: a SimCLR ``Trainer.train_step`` (the app's own step: batched
augmentation of the ``simclr-small`` policy, two views, channels_last, AdamW) on 64 random colour images of
``size`` x ``size`` px, two warm-up steps then ``--steps`` timed ones, on ``--threads`` torch threads. It reports
training images (each gives two views) per second of the process's CPU time on the CPU (so other work sharing the
machine does not skew the ranking; with one thread that is images/s per core), of wall time on CUDA, and the
process's peak resident memory (RSS) minus its RSS before the first step: what one step of that batch adds
(activations, gradients, optimiser state). Prints a Markdown table; ``--table FILE`` reprints one from a saved ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = (32, 64, 96, 128, 224)
ENCODERS = ("small-cnn", "resnet18-cifar", "resnet18", "mobilenet_v2")
WIDTH = 16  # small-cnn / resnet18-cifar width: TrainConfig's default


def _rss_mb() -> float:
    """Current resident set size in MB (Linux /proc), or the peak where /proc is absent."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(encoder: str, size: int, batch: int, steps: int, device: str, threads: int, warmup: int = 2) -> dict:
    """Images/s and step memory of ``encoder`` at ``size`` px (run in its own process, see the module docstring)."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from ssl_viz.config import TrainConfig
    from ssl_viz.data import ImageDataset
    from ssl_viz.train import Trainer

    gen = torch.Generator().manual_seed(0)
    n = max(64, 2 * batch)
    data = ImageDataset(name="random", split="train", images=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen),
                        labels=torch.zeros(n, dtype=torch.long), class_names=["x"])
    cfg = TrainConfig(encoder=encoder, encoder_width=WIDTH, batch_size=batch, device=device, knn_every=0, epochs=100.0)
    trainer = Trainer.from_config(cfg, "/tmp/ssl-viz-bench-sizes", callbacks=[], dataset=data)
    batches = trainer.batches()
    before = _rss_mb()
    for _ in range(warmup):  # allocator, oneDNN primitives
        trainer.train_step(next(batches))
    clock = time.perf_counter if trainer.device.type == "cuda" else time.process_time
    start = clock()
    for _ in range(steps):
        trainer.train_step(next(batches))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = clock() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    return {"encoder": encoder, "size": size, "batch": batch, "steps": steps, "device": str(trainer.device),
            "threads": torch.get_num_threads(), "images_per_s": round(steps * batch / elapsed, 1),
            "step_s": round(elapsed / steps, 3), "step_mb": round(max(0.0, peak - before)), "peak_rss_mb": round(peak)}


def table(rows: list[dict]) -> str:
    """Markdown: one row per size, images/s (and step MB) per encoder."""
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    sizes = sorted({r["size"] for r in rows})
    by = {(r["encoder"], r["size"]): r for r in rows}
    lines = ["| px | " + " | ".join(f"{e} img/s (step MB)" for e in encoders) + " |",
             "| ---: | " + " | ".join("---:" for _ in encoders) + " |"]
    for s in sizes:
        cells = []
        for e in encoders:
            r = by.get((e, s))
            cells.append("—" if r is None else f"{r['images_per_s']:,.0f} ({r['step_mb']:,})" if r["images_per_s"] >= 10
                         else f"{r['images_per_s']:.1f} ({r['step_mb']:,})")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a CPU shared with other work, 2 threads spin on a starved core)")
    parser.add_argument("--json", type=Path, help="append each measurement to this JSON-lines file")
    parser.add_argument("--table", type=Path, help="only print the table of a saved --json file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # encoder:size, the child process
    args = parser.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]))
        return
    if args.one:
        encoder, size = args.one.rsplit(":", 1)
        print(json.dumps(one(encoder, int(size), args.batch, args.steps, args.device, args.threads)))
        return
    rows = []
    for size in map(int, args.sizes.split(",")):
        for encoder in args.encoders.split(","):
            out = subprocess.run([sys.executable, "-m", "bench.image_sizes", "--one", f"{encoder}:{size}", "--batch", str(args.batch),
                                  "--steps", str(args.steps), "--device", args.device, "--threads", str(args.threads)],
                                 capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{encoder:>15} {size:>4} px: {row['images_per_s']:>8,.1f} img/s, step {row['step_s']:.2f} s, +{row['step_mb']} MB",
                  file=sys.stderr, flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
    import torch

    print(f"SimCLR train_step, batch {args.batch}, {args.steps} timed steps, {rows[0]['device']}, {rows[0]['threads']} threads, "
          f"torch {torch.__version__}")
    print(table(rows))


if __name__ == "__main__":
    main()
