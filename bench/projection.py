"""Projection timings on 10k embeddings: UMAP, t-SNE and PCA, first view, repeat and on-disk cache.

    python -m bench.projection [--model models/simclr-fashion-mnist --n 10000]

For each method, in fresh processes as a page would meet them:

* ``first (cold)``: a new process with an empty numba cache (UMAP compiles its kernels);
* ``first (numba cache warm)``: a new process after that, reading numba's on-disk cache;
* ``repeat``: the same projection again in that process;
* ``disk cache``: ``project_cached`` answering from ``<cache>/projections``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("umap", "tsne", "pca")


def child(method: str, path: str) -> None:
    """In a fresh process: time a first and a repeated projection; print JSON."""
    from ssl_viz.analysis.projection import Projector

    X = np.load(path)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        Projector(method).fit_transform(X)
        times.append(time.perf_counter() - start)
    print(json.dumps({"first": times[0], "repeat": times[1]}))


def run_child(method: str, path: Path, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.projection", "--child", method, str(path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def embeddings(model: Path, n: int) -> np.ndarray:
    from ssl_viz.checkpoint import load_model
    from ssl_viz.data import load_dataset
    from ssl_viz.evaluate import embed_dataset

    m = load_model(model)
    images = load_dataset(m.card.get("dataset", "fashion-mnist"), "test").images[:n]
    return embed_dataset(m.embed_fn("backbone"), images, batch_size=512).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "simclr-fashion-mnist")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "NPY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from ssl_viz.analysis.projection import project_cached

    X = embeddings(args.model, args.n)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "X.npy"
        np.save(path, X)
        env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba"), "SSL_VIZ_CACHE": str(Path(tmp) / "cache"), "PYTHONPATH": str(ROOT)}
        os.environ["SSL_VIZ_CACHE"] = env["SSL_VIZ_CACHE"]
        for method in args.methods.split(","):
            cold = run_child(method, path, env)
            warm = run_child(method, path, env)
            project_cached(X, {"bench": "projection"}, method)             # fills the disk cache
            start = time.perf_counter()
            project_cached(X, {"bench": "projection"}, method)
            hit = time.perf_counter() - start
            rows.append({"method": method, "n": len(X), "dim": X.shape[1], "first_cold_s": cold["first"], "first_warm_numba_s": warm["first"],
                         "repeat_s": warm["repeat"], "disk_cache_s": hit})
            print(f"{method}: first {cold['first']:.1f}s (cold), {warm['first']:.1f}s (numba cache warm), repeat {warm['repeat']:.1f}s, "
                  f"disk cache {hit:.3f}s", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
