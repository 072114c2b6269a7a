"""Peak resident memory of the commands that run over a whole dataset, each in a fresh process.

    python -m bench.memory [--model models/simclr-fashion-mnist --device cpu --cases evaluate,embed,knn-10k,baseline]

Each case runs in its own child process (``python -m bench.memory --case NAME``), which reports its own
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` when done, so no case inherits another's peak:

* ``baseline``: the interpreter with torch and ssl_viz imported and Fashion-MNIST (train + test) loaded;
* ``evaluate``: ``python -m ssl_viz evaluate`` on the full Fashion-MNIST (60,000 train as the kNN bank and
  for the linear probe, 10,000 test) with the shipped model;
* ``embed``: ``python -m ssl_viz embed --split train`` (60,000 images) with the same model;
* ``knn-10k``: :func:`ssl_viz.evaluate.knn_accuracy` (k = 200, T = 0.1) with 10,000 classes: random 128-D
  features, a bank of 20,000 and 2,000 queries. The one-hot formula it replaced held
  ``[1024, 200, 10000]`` floats per chunk (8.2 GB, twice with the product).

Prints a markdown table (case, peak RSS in MiB, seconds, exit status) for ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = ("baseline", "evaluate", "embed", "diagnose", "knn-10k")
KNN_CLASSES, KNN_BANK, KNN_QUERIES, KNN_DIM = 10_000, 20_000, 2_000, 128


def _peak_mib() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def run_case(name: str, model: str, device: str) -> dict:
    """Run one case in this process; returns its figures (what the parent prints)."""
    start = time.perf_counter()
    code = 0
    detail = ""
    if name == "baseline":
        import torch  # noqa: F401

        import ssl_viz.cli  # noqa: F401
        from ssl_viz.data import load_dataset

        n = len(load_dataset("fashion-mnist", "train")) + len(load_dataset("fashion-mnist", "test"))
        detail = f"{n:,} images loaded"
    elif name in ("evaluate", "embed"):
        from ssl_viz.cli import main

        with tempfile.TemporaryDirectory() as tmp:
            args = ["--checkpoint", model, "--dataset", "fashion-mnist", "--device", device]
            if name == "embed":
                args += ["--split", "train", "--out", str(Path(tmp) / "emb.npz")]
            code = main([name, *args])
        detail = "full train (60,000) + test (10,000)" if name == "evaluate" else "train split (60,000)"
    elif name == "diagnose":
        from ssl_viz.cli import main

        with tempfile.TemporaryDirectory() as tmp:  # the CLI's defaults, as the issue ran it (it used to take 24 GB)
            code = main(["diagnose", "--dataset", "fashion-mnist", "--checkpoint", model, "--out", str(Path(tmp) / "d.json")])
        detail = "diagnose with its defaults (dose-response of every augmentation, with the encoder)"
    elif name == "knn-10k":
        import torch

        from ssl_viz.evaluate import knn_accuracy

        gen = torch.Generator().manual_seed(0)
        bank = torch.randn(KNN_BANK, KNN_DIM, generator=gen)
        queries = torch.randn(KNN_QUERIES, KNN_DIM, generator=gen)
        labels = torch.randint(0, KNN_CLASSES, (KNN_BANK,), generator=gen)
        qlabels = torch.randint(0, KNN_CLASSES, (KNN_QUERIES,), generator=gen)
        acc = knn_accuracy(bank, labels, queries, qlabels)
        detail = f"{KNN_CLASSES:,} classes, bank {KNN_BANK:,} x {KNN_DIM}, {KNN_QUERIES:,} queries, top-1 {acc:.4f}"
    else:
        raise SystemExit(f"unknown case {name!r}; choose from {', '.join(CASES)}")
    return {"case": name, "peak_mib": round(_peak_mib(), 1), "seconds": round(time.perf_counter() - start, 1),
            "exit": code, "detail": detail}


def measure(cases: list[str], model: str, device: str) -> list[dict]:
    """Each case in a child process of its own; a child that dies (e.g. killed for memory) is reported, not raised."""
    rows = []
    for name in cases:
        proc = subprocess.run([sys.executable, "-m", "bench.memory", "--case", name, "--model", model, "--device", device],
                              cwd=ROOT, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode == 0 and lines:
            rows.append(json.loads(lines[-1]))
        else:
            rows.append({"case": name, "peak_mib": float("nan"), "seconds": float("nan"), "exit": proc.returncode,
                         "detail": (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]})
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict], device: str) -> str:
    out = [f"| case ({device}) | peak RSS (MiB) | seconds | exit | what |", "| --- | ---: | ---: | ---: | --- |"]
    out += [f"| {r['case']} | {r['peak_mib']:,.0f} | {r['seconds']:.1f} | {r['exit']} | {r['detail']} |" for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "simclr-fashion-mnist"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)  # the child process: run one case, print its JSON
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.model, args.device)), flush=True)
        return 0
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
    print(table(measure(cases, args.model, args.device), args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
