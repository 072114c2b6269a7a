"""Time to the first map: UMAP (and PCA, t-SNE) of 10,000 and 70,000 embeddings in fresh processes.

    python -m bench.projection [--model models/simclr-fashion-mnist] [--before PATH] [--methods umap,pca,tsne]

The embeddings are the shipped SimCLR's backbone embeddings of Fashion-MNIST: two disjoint sets of 10,000
(test, then train images) and all 70,000 (train + test). For each code version (this tree, and with
``--before PATH`` an older checkout, e.g. ``git worktree add /tmp/before <commit>``), each in new processes:

* ``cold, empty numba cache``: a new process whose numba cache folder is empty (the very first map on a machine);
* ``cold, cache filled``: a new process after ``make run``'s set-up step (``python -m ssl_viz.analysis.projection``)
  filled the cache: what the first visitor of a fresh server waits;
* ``after preload``: a new process that first ran the server's start-up preload (import umap-learn, a 200-point
  map), then the first map: what the first visitor waits once the server has been up for the preload's seconds;
* ``repeat``: the same process, the other 10,000 points (nothing cached for them);
* ``70k``: the same process, all 70,000 points.

Quality: trustworthiness (scikit-learn, 15 neighbours, on 3,000 of the 10,000) and the share of each point's 15
nearest neighbours in the embedding space (cosine) that are among its 15 nearest on the map.
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
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after PYTHONPATH: a child measuring an older checkout imports its ssl_viz


def child(method: str, folder: str, big: bool) -> None:
    """In a fresh process: time the first map (set A), a repeat (set B) and, with ``big``, 70k points; print JSON.

    ``first_s`` includes importing umap-learn and loading (or compiling) its kernels, as a server's first map
    does without a preload; ``after_preload_s`` is the first map of a second fresh process that ran the server's
    start-up preload (:func:`ssl_viz.ui.serve.preload_umap`, ``preload_s``) before it."""
    from ssl_viz.analysis.projection import Projector

    out = {}
    for name, file in (("first", "a.npy"), ("repeat", "b.npy")) + ((("70k", "all.npy"),) if big else ()):
        X = np.load(Path(folder) / file)
        start = time.perf_counter()
        coords = Projector(method).fit_transform(X)
        out[f"{name}_s"] = time.perf_counter() - start
        if name == "first":
            np.save(Path(folder) / f"coords-{method}-{os.getpid()}.npy", coords)
            out["coords"] = f"coords-{method}-{os.getpid()}.npy"
    print(json.dumps(out))


def preloaded_child(method: str, folder: str) -> None:
    """In a fresh process: the server's start-up preload, then the first map of set A; print JSON."""
    start = time.perf_counter()
    try:
        from ssl_viz.ui.serve import preload_umap
    except ImportError:  # an older version without a preload
        preload_umap = None
    if preload_umap is not None and method == "umap":
        preload_umap()
    out = {"preload_s": time.perf_counter() - start if preload_umap else None}
    from ssl_viz.analysis.projection import Projector

    X = np.load(Path(folder) / "a.npy")
    start = time.perf_counter()
    Projector(method).fit_transform(X)
    out["after_preload_s"] = time.perf_counter() - start
    print(json.dumps(out))


def run_child(code: Path, method: str, folder: Path, env: dict, big: bool, preload: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, str(folder)] + (["--big"] if big else []) + (["--preload"] if preload else [])
    out = subprocess.run(cmd, cwd=code, env={**env, "PYTHONPATH": str(code)}, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm(code: Path, env: dict) -> None:
    """Fill the numba cache as ``make run`` does (the old code had no such step: a first UMAP does the same)."""
    script = ("import numpy as np; from ssl_viz.analysis import projection as p; "
              "p.warm_up() if hasattr(p, 'warm_up') else p.Projector('umap').fit_transform(np.random.default_rng(0).normal(size=(5000, 16)))")
    subprocess.run([sys.executable, "-c", script], cwd=code, env={**env, "PYTHONPATH": f"{code}"}, check=True, capture_output=True)


def embeddings(model: Path) -> tuple[np.ndarray, np.ndarray]:
    """(test embeddings [10000, D], train embeddings [60000, D]) of the shipped model."""
    from ssl_viz.checkpoint import load_model
    from ssl_viz.data import load_dataset
    from ssl_viz.evaluate import embed_dataset

    m = load_model(model)
    fn = m.embed_fn("backbone")
    name = m.card.get("dataset", "fashion-mnist")
    return tuple(embed_dataset(fn, load_dataset(name, split).images, batch_size=512).numpy() for split in ("test", "train"))


def quality(X: np.ndarray, coords: np.ndarray, n: int = 3000, k: int = 15) -> dict:
    """Trustworthiness and embedding-kNN recall on the map, on the first ``n`` points."""
    from sklearn.manifold import trustworthiness

    X, coords = X[:n] / np.linalg.norm(X[:n], axis=1, keepdims=True), coords[:n]
    sim = X @ X.T
    np.fill_diagonal(sim, -np.inf)
    nn_x = np.argsort(-sim, axis=1)[:, :k]
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn_c = np.argsort(d, axis=1)[:, :k]
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(nn_x, nn_c)])
    return {"trustworthiness": float(trustworthiness(X, coords, n_neighbors=k)), "knn_recall": float(recall)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "simclr-fashion-mnist")
    parser.add_argument("--before", type=Path, help="an older checkout to measure the same way")
    parser.add_argument("--methods", default="umap")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--big", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preload", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        preloaded_child(*args.child) if args.preload else child(*args.child, big=args.big)
        return
    test, train = embeddings(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "a.npy", test)
        np.save(folder / "b.npy", train[:10_000])
        np.save(folder / "all.npy", np.concatenate([train, test]))
        versions = [("after", ROOT)] + ([("before", args.before)] if args.before else [])
        for version, code in versions:
            for method in args.methods.split(","):
                env = {**os.environ, "NUMBA_CACHE_DIR": str(folder / f"numba-{version}"), "SSL_VIZ_CACHE": str(folder / f"cache-{version}")}
                cold = run_child(code, method, folder, env, big=False) if method == "umap" else None
                if method == "umap":
                    warm(code, env)
                filled = run_child(code, method, folder, env, big=method != "tsne")
                pre = run_child(code, method, folder, env, big=False, preload=True)
                q = quality(test, np.load(folder / filled["coords"]))
                row = {"version": version, "method": method, "cold_empty_cache_s": cold["first_s"] if cold else None,
                       "cold_cache_filled_s": filled["first_s"], "preload_s": pre["preload_s"], "after_preload_s": pre["after_preload_s"],
                       "repeat_s": filled["repeat_s"], "70k_s": filled.get("70k_s"), **q}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
