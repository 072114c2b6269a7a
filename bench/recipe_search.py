"""Recipe search: which SSL recipe reaches the best kNN accuracy in a CPU time budget?

    python -m bench.recipe_search --device cuda --workers 8 --out recipes.jsonl [--grid cpu300] [--only NAME,...]

Sweeping on 2 CPU cores costs 5 minutes a configuration. Instead each candidate
is trained for the number of steps a 2-core CPU manages in ``--budget`` seconds
(from the CPU rates measured with ``bench.train_throughput``, table ``CPU_IMAGES_PER_S``),
on whatever device is at hand (a GPU runs several in parallel), and then scored
by the protocol of the time-to-quality target: weighted kNN top-1 (k=200, T=0.1)
of the backbone features, the 60k training set as the bank, on the full 10k test set.
The winners are then confirmed by a real ``--time-budget`` run on the CPU
(``bench.time_to_quality``); this search only ranks.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Training images/s of one step on 2 CPU cores (AMD EPYC, torch 2.14, channels_last, batch 256,
# Fashion-MNIST 28 px), measured with bench.train_throughput; keys are (method, encoder, width).
CPU_IMAGES_PER_S = {
    ("simclr", "small-cnn", 16): 2259, ("simclr", "small-cnn", 24): 1290, ("simclr", "small-cnn", 32): 950,
    ("simclr", "resnet18-cifar", 8): 979, ("simclr", "resnet18-cifar", 16): 460,
    ("moco", "small-cnn", 32): 764, ("byol", "small-cnn", 32): 782, ("swav", "small-cnn", 32): 994,
    ("memory_bank", "small-cnn", 32): 925, ("supervised", "small-cnn", 32): 2109,
}


def cpu_rate(method: str, encoder: str, width: int) -> float:
    """CPU images/s; other methods at other widths scale SimCLR's rate by the method's ratio at width 32."""
    if (method, encoder, width) in CPU_IMAGES_PER_S:
        return CPU_IMAGES_PER_S[(method, encoder, width)]
    base = CPU_IMAGES_PER_S[("simclr", encoder, width)]
    ratio = CPU_IMAGES_PER_S.get((method, "small-cnn", 32), 950) / CPU_IMAGES_PER_S[("simclr", "small-cnn", 32)]
    return base * ratio


def candidate(name: str, **changes) -> dict:
    return {"name": name, **changes}


def grid_cpu300() -> list[dict]:
    """The candidates tried for the 300 s CPU target, most informative first."""
    first, methods, rest = [], [], []
    for enc, w in [("small-cnn", 16), ("small-cnn", 24), ("small-cnn", 32), ("resnet18-cifar", 8), ("resnet18-cifar", 16)]:
        for lr in (1e-3, 2e-3, 4e-3, 8e-3):
            first.append(candidate(f"simclr-{enc}{w}-lr{lr:g}", encoder=enc, encoder_width=w, lr=lr))
    augs = {
        "crop08": "simclr+crop_scale=0.08:1.0", "crop35": "simclr+crop_scale=0.35:1.0", "crop50": "simclr+crop_scale=0.5:1.0",
        "nojit": "simclr+jitter_p=0.0,grayscale_p=0.0", "jit1": "simclr+jitter_strength=1.0", "blur": "simclr+blur_p=0.5",
        "cutout": "simclr+cutout_p=0.5", "noflip": "simclr+flip_p=0.0", "crop35-nogray": "simclr+crop_scale=0.35:1.0,grayscale_p=0.0",
    }
    for w in (16, 32):
        for method in ("moco", "byol", "swav", "memory_bank", "supervised"):
            for lr in (2e-3, 6e-3):
                methods.append(candidate(f"{method}-sc{w}-lr{lr:g}", method=method, encoder_width=w, lr=lr))
        for t in (0.1, 0.3, 0.5):
            rest.append(candidate(f"simclr-sc{w}-t{t}", encoder_width=w, lr=4e-3, temperature=t))
        for tag, spec in augs.items():
            rest.append(candidate(f"simclr-sc{w}-{tag}", encoder_width=w, lr=4e-3, augment=spec))
        for bs in (128, 512):
            rest.append(candidate(f"simclr-sc{w}-bs{bs}", encoder_width=w, lr=4e-3 * bs / 256, batch_size=bs))
        rest.append(candidate(f"simclr-sc{w}-sgd", encoder_width=w, optimizer="sgd", lr=0.5, weight_decay=5e-4))
        rest.append(candidate(f"simclr-sc{w}-wd1e-2", encoder_width=w, lr=4e-3, weight_decay=1e-2))
        rest.append(candidate(f"simclr-sc{w}-proj2048", encoder_width=w, lr=4e-3, proj_hidden=2048, proj_dim=128))
        rest.append(candidate(f"simclr-sc{w}-warm0", encoder_width=w, lr=4e-3, warmup_fraction=0.0))
    return first + methods + rest


def grid_cpu120() -> list[dict]:
    """Real 120 s CPU runs (``--real --budget 120``): the intensity-augmentation study behind ``simclr-small``."""
    base = {"encoder_width": 16, "lr": 8e-3}
    small50 = "simclr+crop_scale=0.5:1.0,jitter_strength=1.0,jitter_p=1.0,solarize_p=0.2"
    specs = {
        "simclr-policy": "simclr",
        "crop50": "simclr+crop_scale=0.5:1.0",
        "crop35-no-jitter": "simclr+crop_scale=0.35:1.0,jitter_p=0.0,grayscale_p=0.0",
        "crop50-jitter-s1": "simclr+crop_scale=0.5:1.0,jitter_strength=1.0",
        "crop50-jitter-s1-p1": "simclr+crop_scale=0.5:1.0,jitter_strength=1.0,jitter_p=1.0",
        "crop50-solarize0.2": "simclr+crop_scale=0.5:1.0,solarize_p=0.2",
        "crop50-jitter-s1-p1-solarize0.2": small50,
        "crop50-jitter-s1-p1-solarize0.5": small50.replace("solarize_p=0.2", "solarize_p=0.5"),
        "crop35-jitter-s1-p1-solarize0.2": small50.replace("0.5:1.0", "0.35:1.0"),
    }
    out = [candidate(name, augment=spec, **base) for name, spec in specs.items()]
    out.insert(3, candidate("crop50-t0.5", augment="simclr+crop_scale=0.5:1.0", temperature=0.5, **base))
    out.append(candidate("crop50-jitter-s1-p1-solarize0.2-t0.1", augment=small50, temperature=0.1, **base))
    return out


def grid_final300() -> list[dict]:
    """Real 300 s CPU runs (``--real --budget 300``) of the two finalists; crop 0.65 became ``simclr-small``."""
    small = "simclr+jitter_strength=1.0,jitter_p=1.0,solarize_p=0.2"
    return [candidate(f"crop{c}-jitter-s1-p1-solarize0.2", augment=f"{small},crop_scale=0.{c}:1.0", encoder_width=16, lr=8e-3) for c in (50, 65)]


def grid_speed120() -> list[dict]:
    """Real 120 s CPU runs (``--real --budget 120``), this round's screen from the ``simclr-small`` default: smaller
    training views (the test images stay 28 px), temperature, width and batch at the faster step."""
    base = {"encoder_width": 16, "lr": 8e-3, "augment": "simclr-small"}
    out = [candidate("default-28px", **base)]
    for size in (24, 20, 16):
        out.append(candidate(f"views{size}px", **{**base, "augment": f"simclr-small+out_size={size}"}))
    v20 = {**base, "augment": "simclr-small+out_size=20"}
    out += [candidate("views20px-t0.1", **v20, temperature=0.1), candidate("views20px-t0.3", **v20, temperature=0.3),
            candidate("views20px-w24", **{**v20, "encoder_width": 24}),
            candidate("views20px-crop50", **{**v20, "augment": "simclr-small+out_size=20,crop_scale=0.5:1.0"}),
            candidate("views20px-bs512", **{**v20, "batch_size": 512, "lr": 1.2e-2}),
            candidate("views20px-bs128", **{**v20, "batch_size": 128, "lr": 6e-3})]
    for n, size, lo, hi in ((2, 14, 0.2, 0.5), (4, 14, 0.2, 0.5), (4, 12, 0.1, 0.4)):
        out.append(candidate(f"mc{n}x{size}-{lo:g}-{hi:g}", **base, small_crops=n, small_crop_size=size, small_crop_scale=(lo, hi)))
    out += [candidate("t0.1", **base, temperature=0.1), candidate("bs128", **{**base, "batch_size": 128, "lr": 6e-3}),
            candidate("lr1.2e-2", **{**base, "lr": 1.2e-2})]
    return out


def grid_methods120() -> list[dict]:
    """Real 120 s CPU runs (``--real --budget 120``): each method on SimCLR's recipe, then the usual levers of its paper
    (MoCo's and SwAV's temperatures, BYOL's predictor lr and EMA, the memory bank's temperature and bank momentum)."""
    base = {"encoder_width": 16, "lr": 6e-3, "batch_size": 128, "augment": "simclr-small"}  # speed120's winner
    out = []
    for method in ("moco", "swav", "byol", "memory_bank"):
        out.append(candidate(f"{method}-base", method=method, **base))
    out += [candidate("moco-t0.1", method="moco", **base, temperature=0.1),
            candidate("swav-t0.1", method="swav", **base, temperature=0.1),
            candidate("byol-pred10", method="byol", **base, predictor_lr_scale=10.0),
            candidate("byol-pred10-m0.98", method="byol", **base, predictor_lr_scale=10.0, momentum=0.98),
            candidate("memory_bank-t0.1", method="memory_bank", **base, temperature=0.1),
            candidate("memory_bank-t0.1-bm0", method="memory_bank", **base, temperature=0.1, bank_momentum=0.0)]
    return out


def grid_methods120b() -> list[dict]:
    """Real 120 s CPU runs (``--real --budget 120``), the second screen: each method's best of methods120 pushed one step
    further (the memory bank's InstDisc temperature 0.07 and a higher lr, BYOL's faster EMA, MoCo's EMA, SwAV's prototypes,
    SimCLR's batch halved again)."""
    base = {"encoder_width": 16, "lr": 6e-3, "batch_size": 128, "augment": "simclr-small"}
    return [candidate("memory_bank-t0.07-bm0", method="memory_bank", **base, temperature=0.07, bank_momentum=0.0),
            candidate("memory_bank-t0.1-bm0-lr1.2e-2", method="memory_bank", **{**base, "lr": 1.2e-2}, temperature=0.1, bank_momentum=0.0),
            candidate("byol-pred10-m0.96", method="byol", **base, predictor_lr_scale=10.0, momentum=0.96),
            candidate("moco-t0.1-m0.98", method="moco", **base, temperature=0.1, momentum=0.98),
            candidate("swav-t0.1-p300", method="swav", **base, temperature=0.1, n_prototypes=300),
            candidate("simclr-bs64-lr4e-3", **{**base, "batch_size": 64, "lr": 4e-3})]


def grid_methods120c() -> list[dict]:
    """Real 120 s CPU runs (``--real --budget 120``), the third screen, for the two presets still short of 0.85 at 300 s:
    BYOL's EMA faster again, MoCo's queue four times longer."""
    base = {"encoder_width": 16, "lr": 6e-3, "batch_size": 128, "augment": "simclr-small"}
    return [candidate("byol-pred10-m0.92", method="byol", **base, predictor_lr_scale=10.0, momentum=0.92),
            candidate("moco-t0.1-q16384", method="moco", **base, temperature=0.1, queue_size=16384)]


def grid_confirm300() -> list[dict]:
    """Real 300 s CPU runs (``--real --budget 300``): speed120's best (batch 128, lr 6e-3) against the default, back to back;
    then methods120b's batch 64."""
    base = {"encoder_width": 16, "lr": 8e-3, "augment": "simclr-small"}
    return [candidate("default", **base), candidate("bs128-lr6e-3", **{**base, "batch_size": 128, "lr": 6e-3}),
            candidate("bs64-lr4e-3", **{**base, "batch_size": 64, "lr": 4e-3})]  # methods120b's SimCLR, run after the first two


# What a candidate changes is relative to this base (the defaults before the search).
SEARCH_BASE = {"method": "simclr", "encoder": "small-cnn", "encoder_width": 32, "augment": "simclr", "lr": 2e-3}
GRIDS = {"cpu300": grid_cpu300, "cpu120": grid_cpu120, "final300": grid_final300, "speed120": grid_speed120, "methods120": grid_methods120, "confirm300": grid_confirm300, "methods120b": grid_methods120b, "methods120c": grid_methods120c}
METHOD_KEYS = {"temperature", "proj_hidden", "proj_dim", "queue_size", "momentum", "n_prototypes", "bank_loss", "bank_momentum",
               "predictor_lr_scale"}


def build_config(cand: dict, budget: float, n_train: int, real: bool = False):
    from ssl_viz.config import TrainConfig

    train_changes = {k: v for k, v in cand.items() if k not in METHOD_KEYS and k != "name"}
    method_changes = {k: v for k, v in cand.items() if k in METHOD_KEYS}
    cfg = TrainConfig(knn_every=0, amp=False, **{**SEARCH_BASE, **train_changes})
    cfg = replace(cfg, method_cfg=replace(cfg.method_cfg, **method_changes))
    if real:  # train for ``budget`` seconds on this machine
        return replace(cfg, time_budget=budget), None
    steps = cpu_rate(cfg.method, cfg.encoder, cfg.encoder_width) * budget / cfg.batch_size
    return replace(cfg, epochs=steps * cfg.batch_size / n_train), int(steps)


def run_one(cand: dict, budget: float, device: str, real: bool = False) -> dict:
    """Train one candidate for its CPU-equivalent number of steps (or ``budget`` real seconds) and score it on the full test set."""
    import torch

    from ssl_viz.data import load_dataset
    from ssl_viz.evaluate import embed_dataset, knn_accuracy
    from ssl_viz.train import Trainer

    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    cfg, steps = build_config(cand, budget, len(train), real)
    cfg = replace(cfg, device=device)
    start = time.perf_counter()
    trainer = Trainer.from_config(cfg, Path("/tmp/recipe_search") / cand["name"], callbacks=[], dataset=train)
    state = trainer.fit()
    seconds = time.perf_counter() - start
    encoder = trainer.method.encoder.eval()
    with torch.inference_mode():
        bank = embed_dataset(encoder, train.images, device=trainer.device, batch_size=2048)
        queries = embed_dataset(encoder, test.images, device=trainer.device, batch_size=2048)
    knn = knn_accuracy(bank.to(trainer.device), train.labels.to(trainer.device), queries.to(trainer.device), test.labels.to(trainer.device))
    return {**cand, "steps": state.step, "planned_steps": steps, "stop": state.stop_reason, "knn_top1": round(knn, 4),
            "loss": round(state.last_logs.get("loss", float("nan")), 4), "seconds": round(seconds, 1), "device": device}


def _worker(queue, results, budget: float, device: str, threads: int, real: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    while True:
        cand = queue.get()
        if cand is None:
            return
        try:
            results.put(run_one(cand, budget, device, real))
        except Exception as exc:  # one bad candidate must not stop the search
            results.put({**cand, "error": f"{type(exc).__name__}: {exc}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="cpu300", choices=sorted(GRIDS))
    parser.add_argument("--budget", type=float, default=300.0, help="CPU seconds each candidate emulates (or trains, with --real)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--real", action="store_true", help="train each candidate for --budget real seconds here (one worker)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per worker")
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    parser.add_argument("--limit", type=int, default=0, help="at most this many candidates")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per candidate (appended)")
    args = parser.parse_args()
    if args.real:
        args.workers = 1  # concurrent runs would share the cores they are timed on
    cands = GRIDS[args.grid]()
    if args.only:
        wanted = set(args.only.split(","))
        cands = [c for c in cands if c["name"] in wanted]
    if args.limit:
        cands = cands[: args.limit]
    print(f"{len(cands)} candidates, {args.workers} workers, device {args.device}", flush=True)
    ctx = mp.get_context("spawn")
    queue, results = ctx.Queue(), ctx.Queue()
    for c in cands:
        queue.put(c)
    for _ in range(args.workers):
        queue.put(None)
    procs = [ctx.Process(target=_worker, args=(queue, results, args.budget, args.device, args.threads, args.real)) for _ in range(args.workers)]
    for p in procs:
        p.start()
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as fh:
        for _ in cands:
            row = results.get()
            rows.append(row)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(f"{row['name']:<32} knn {row.get('knn_top1', float('nan')):.4f}  steps {row.get('steps', 0):>5}  "
                  f"{row.get('seconds', 0):>6.1f}s  {row.get('error', '')}", flush=True)
    for p in procs:
        p.join()
    print("\nbest first:")
    for row in sorted(rows, key=lambda r: -r.get("knn_top1", 0))[:15]:
        print(f"  {row['name']:<32} {row.get('knn_top1', float('nan')):.4f}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
