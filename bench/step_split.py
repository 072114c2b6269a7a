"""Where a training step's time goes on the CPU: augmentation, forward, backward, optimiser, and the layers that cost most.

    python -m bench.step_split [--method simclr --encoder small-cnn --width 16 --batch 128 --steps 100] [--json FILE]

Times the parts of ``Trainer.train_step`` one after another on the same batches (the loop's own code: batched
augmentation, channels_last, fused AdamW), then profiles forward + backward with ``torch.profiler`` and sums the
self time of the operators by the spatial size of their first input, which shows which stage of the encoder the
step pays for. Run it with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssl_viz.config import TrainConfig, method_preset  # noqa: E402
from ssl_viz.data import load_dataset  # noqa: E402
from ssl_viz.train import Trainer  # noqa: E402

PARTS = ("batch", "augment", "forward", "backward", "clip+sync", "optimizer")


def split(trainer: Trainer, steps: int, warmup: int = 20) -> dict[str, float]:
    """Mean milliseconds per step of each part of the step (:data:`PARTS`) and of the whole (``step``)."""
    batches, cfg = trainer.batches(), trainer.cfg
    totals: dict[str, float] = defaultdict(float)
    for i in range(warmup + steps):
        index = next(batches)
        t = [time.perf_counter()]
        x = trainer.images[index].float().div_(255.0)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t.append(time.perf_counter())
        views = trainer.augment(x, generator=trainer.generator)
        t.append(time.perf_counter())
        out = trainer.forward(views, index, trainer.labels[index], generator=trainer.method_generator)
        t.append(time.perf_counter())
        trainer.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        t.append(time.perf_counter())
        grad_norm = torch.nn.utils.clip_grad_norm_(trainer.method.parameters(), cfg.grad_clip)
        out.floats(grad_norm=grad_norm)
        t.append(time.perf_counter())
        trainer.optimizer.step()
        trainer.method.on_step_end(out, i, warmup + steps)
        t.append(time.perf_counter())
        if i >= warmup:
            for name, a, b in zip(PARTS, t[:-1], t[1:]):
                totals[name] += b - a
            totals["step"] += t[-1] - t[0]
    return {k: 1000.0 * v / steps for k, v in totals.items()}


def by_resolution(trainer: Trainer, steps: int = 10) -> dict[str, float]:
    """Share of forward + backward self time (profiler) by the ``HxW`` of each operator's first 4-d input."""
    from torch.profiler import ProfilerActivity, profile

    batches = trainer.batches()
    views = trainer.augment(trainer.images[next(batches)].float().div_(255.0).contiguous(memory_format=torch.channels_last),
                            generator=trainer.generator)
    index = torch.arange(views[0].shape[0])
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            trainer.forward(views, index, trainer.labels[index], generator=trainer.method_generator).loss.backward()
    shares: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages(group_by_input_shape=True):
        shape = next((s for s in ev.input_shapes if isinstance(s, list) and len(s) == 4), None)
        shares[f"{shape[2]}x{shape[3]}" if shape else "other"] += ev.self_cpu_time_total
    total = sum(shares.values())
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--encoder", default="small-cnn")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=TrainConfig().batch_size)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = method_preset(args.method, encoder=args.encoder, encoder_width=args.width, batch_size=args.batch, knn_every=0,
                        time_budget=3600.0, device="cpu")
    trainer = Trainer.from_config(cfg, "/tmp/ssl-viz-step-split", callbacks=[], dataset=load_dataset("fashion-mnist", "train"))
    ms = split(trainer, args.steps)
    shares = by_resolution(trainer)
    print(f"{args.method}, {args.encoder} width {args.width}, batch {args.batch}, {torch.get_num_threads()} threads: "
          f"{ms['step']:.0f} ms a step, {args.batch * 1000 / ms['step']:,.0f} images/s")
    print("| part | ms / step | share |\n| --- | ---: | ---: |")
    for name in PARTS:
        print(f"| {name} | {ms[name]:.1f} | {ms[name] / ms['step']:.0%} |")
    print("\nforward + backward self time by the input size of each operator:")
    print("| input H x W | share |\n| --- | ---: |")
    for k, v in shares.items():
        print(f"| {k} | {v:.0%} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": {k: v for k, v in vars(args).items() if k != "json"}, "threads": torch.get_num_threads(),
                                         "ms_per_step": ms, "share_by_input_size": shares}, indent=2))


if __name__ == "__main__":
    main()
