"""Top-10 retrieval latency of exact search over galleries of 10k, 100k and 1M 128-d embeddings (CPU).

    python -m bench.retrieval [--sizes 10000,100000,1000000 --dim 128 --repeats 5]

Per gallery: build time (normalising the bank), the latency of one query (what the
retrieval page does on a click) and of a batch of 100 queries (per query). The
gallery is random unit vectors: exact search costs the same whatever the content.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssl_viz.analysis.retrieval import Retriever  # noqa: E402

INTERACTIVE_MS = 100.0  # a click that answers within this feels instant


def best_of(fn, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``fn`` after one warm-up, in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(n: int, dim: int, repeats: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    bank = rng.standard_normal((n, dim), dtype=np.float32)
    queries = rng.standard_normal((100, dim), dtype=np.float32)
    start = time.perf_counter()
    retriever = Retriever(k=10).fit(bank)
    build = time.perf_counter() - start
    one = best_of(lambda: retriever.query(queries[:1]), repeats)
    batch = best_of(lambda: retriever.query(queries), repeats)
    return {"n": n, "dim": dim, "build_s": build, "one_query_ms": one * 1e3, "per_query_in_batch_ms": batch * 1e3 / len(queries),
            "bank_mb": n * dim * 4 / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"exact cosine top-10, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'gallery':>10}{'bank MB':>9}{'build s':>9}{'1 query ms':>12}{'per query in 100, ms':>22}")
    rows = [measure(int(n), args.dim, args.repeats) for n in args.sizes.split(",")]
    for r in rows:
        print(f"{r['n']:>10,}{r['bank_mb']:>9.0f}{r['build_s']:>9.2f}{r['one_query_ms']:>12.1f}{r['per_query_in_batch_ms']:>22.2f}")
    slow = [r["n"] for r in rows if r["one_query_ms"] > INTERACTIVE_MS]
    where = f"from {min(slow):,} items" if slow else f"beyond {rows[-1]['n']:,} items"
    print(f"one query stays under {INTERACTIVE_MS:.0f} ms up to the largest gallery below that line; an approximate index "
          f"(IVF / HNSW, e.g. faiss) would pay off {where}.")


if __name__ == "__main__":
    main()
