"""2-D / 3-D maps of embeddings: UMAP, t-SNE and PCA behind one scikit-learn-style estimator.

>>> coords = Projector("pca", n_components=2).fit_transform(embeddings)   # [N, 2]

By default the rows are L2-normalised first, so the map shows the cosine
geometry the contrastive loss works in (Euclidean distance between unit
vectors is a monotone function of their cosine: ``|a - b|^2 = 2 - 2 cos(a, b)``).

UMAP runs on a k-nearest-neighbour graph from chunked matrix products (:func:`knn_graph`: exact, or for
large maps bfloat16 candidates re-ranked exactly) with a PCA initialisation and :func:`umap_epochs` epochs. Its
kernels are compiled by numba on the first call in a process; :func:`enable_numba_cache`
makes umap-learn's kernels cacheable in ``<cache>/numba`` (``NUMBA_CACHE_DIR``), and
:func:`warm_up` (run by ``make venv``) fills that cache, so a fresh server process loads
compiled code instead of compiling it. :func:`project_cached` keeps finished projections
on disk, keyed by what made them.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from typing import Any

import numpy as np

from ssl_viz.cache import cached_arrays, key_hash
from ssl_viz.paths import cache_dir

METHODS = ("umap", "tsne", "pca")
NAMES = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}
UMAP_APPROXIMATE_FROM = 4096  # umap-learn alone switches from exact distances to pynndescent at this many points
UMAP_DEFAULTS = {"n_neighbors": 15, "min_dist": 0.1}   # umap-learn's defaults, the ones people expect
TSNE_DEFAULT_PERPLEXITY = 30.0                         # scikit-learn's and openTSNE's default
_UMAP_WARM = False  # set once a UMAP has run in this process (numba compiled)


class ProjectionError(ValueError):
    """The points cannot be projected with this method (too few points or features); the message says how many it needs."""


def min_points(method: str, n_components: int = 2) -> int:
    """The fewest points ``method`` maps to ``n_components`` dimensions: PCA ``n_components``; UMAP and t-SNE
    ``n_components + 2`` (their neighbour graphs and initialisations need a few points beyond the dimensions)."""
    return n_components if method == "pca" else n_components + 2


def _as_float_array(X) -> np.ndarray:
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array [N, D], got shape {X.shape}")
    return X


def l2_normalize(X: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    X = _as_float_array(X)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), eps)


def _import_umap():
    """Import umap with numba's on-disk cache under ``<cache>/numba``."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        folder = cache_dir() / "numba"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.environ["NUMBA_CACHE_DIR"] = str(folder)
            import sys

            if "numba" in sys.modules:  # numba read its config already: make it read it again
                sys.modules["numba"].core.config.reload_config()
        except OSError:
            pass
    import umap

    enable_numba_cache()
    return umap


def enable_numba_cache() -> int:
    """Make umap-learn's numba kernels cacheable on disk (``NUMBA_CACHE_DIR``); returns how many were switched on.

    umap-learn declares most of its ``@numba.njit`` kernels without ``cache=True``, so every new
    process compiled them again (about 10 s on 2 cores before the first map). A numba dispatcher can
    be given an on-disk cache after the fact (``Dispatcher.enable_caching``); compiled code is then
    written once and read by later processes. Kernels numba cannot cache (closures) simply compile
    as before. Idempotent.
    """
    import importlib

    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    count = 0
    for name in ("umap.umap_", "umap.layouts", "umap.utils", "umap.spectral", "umap.distances", "umap.sparse"):
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - a umap-learn without that module
            continue
        for obj in vars(module).values():
            if isinstance(obj, CPUDispatcher) and isinstance(obj._cache, NullCache):
                try:
                    obj.enable_caching()
                    count += 1
                except Exception:  # noqa: BLE001 - a kernel numba cannot cache compiles as before
                    pass
    return count


def warm_up(n: int = 400) -> float:
    """Run a small UMAP the way :class:`Projector` runs it, so numba compiles (and caches) every kernel; returns seconds.

    Called by ``make venv`` / the Docker build (``python -m ssl_viz.analysis.projection``), so the first map
    in a fresh server process reads compiled code from ``<cache>/numba``.
    """
    import time

    start = time.perf_counter()
    X = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)
    proj = Projector("umap", n_components=2).fit(X)
    proj.transform(X[:3])
    Projector("umap", n_components=3).fit(X)
    return time.perf_counter() - start


UMAP_EPOCH_BUDGET = 300_000   # points x epochs of a map's layout: about 0.6 s of umap-learn's serial kernel on 2 cores
UMAP_MIN_EPOCHS, UMAP_MAX_EPOCHS = 30, 200


def umap_epochs(n: int) -> int:
    """Optimisation epochs of a UMAP of ``n`` points: ``UMAP_EPOCH_BUDGET / n`` within [30, 200] (umap-learn: 500 / 200).

    The layout's cost is about points x epochs, so a fixed budget keeps every map's layout near 0.6 s on
    2 cores: 2,000 points get 150 epochs, 10,000 get 30, 70,000 get 30. The layout starts from PCA rather
    than a spectral layout, so far fewer epochs reach a map of the same neighbourhood quality. Measured on
    10,000 Fashion-MNIST embeddings of the shipped SimCLR (trustworthiness at 15 neighbours / share of the
    15 embedding neighbours kept on the map): 30 epochs 0.977 / 0.360 in 0.6 s, 100 epochs 0.979 / 0.391
    in 1.9 s, umap-learn's 500 spectral-initialised epochs 0.978 / 0.396 in 18.7 s
    (``bench/projection.py``, ``bench/RESULTS.md``); clusters are a little looser at 30 epochs.
    """
    return int(min(UMAP_MAX_EPOCHS, max(UMAP_MIN_EPOCHS, UMAP_EPOCH_BUDGET // max(int(n), 1))))


class ExactSearchIndex:
    """Exact nearest neighbours of new points among the fitted ones, in the shape umap-learn's ``transform`` asks of
    its search index (``query(X, k, epsilon)`` and ``_angular_trees``), so a UMAP fitted on the exact graph of
    :func:`exact_knn` can still place new points (``UMAP.transform``) without pynndescent.

    Args:
        data: ``[N, D]`` the fitted points (already normalised as the projector normalises).
    """

    _angular_trees = False

    def __init__(self, data: np.ndarray) -> None:
        self._raw_data = np.ascontiguousarray(data, dtype=np.float32)

    def query(self, X, k: int, epsilon: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """``(indices [M, k] int32, Euclidean distances [M, k] float32)`` of the ``k`` nearest fitted points; ``epsilon`` is ignored (exact)."""
        from ssl_viz.analysis.retrieval import Retriever

        scores, idx = Retriever(k=k, metric="euclidean").fit(self._raw_data).query(np.asarray(X, dtype=np.float32))
        return idx.astype(np.int32), np.maximum(-scores, 0.0).astype(np.float32)


def _limit_threads(n: int | None):
    """Context manager capping BLAS / OpenMP threads at ``n`` (None: half the CPUs, at least 1)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(n or max(1, (os.cpu_count() or 1) // 2))


def exact_knn(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k-nearest neighbours of every row (itself first): (indices ``[N, k]`` int64, distances ``[N, k]`` float32)."""
    from ssl_viz.analysis.retrieval import Retriever

    scores, idx = Retriever(k=k, metric="euclidean").fit(X).query(X)
    dists = np.maximum(-scores, 0.0).astype(np.float32)
    dists[:, 0] = np.where(idx[:, 0] == np.arange(len(X)), 0.0, dists[:, 0])
    return idx, dists


BF16_KNN_FROM = 20_000   # points from which a UMAP graph's candidates are scored in bfloat16 (where the CPU has matrix units for it)
BF16_CANDIDATES = 96     # candidates kept per point before the exact float32 re-ranking


def bf16_matmul_is_fast() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX tiles): there a ``[1024, 128] x [128, 70000]``
    product takes 0.06 s against 0.21 s in float32 on 2 cores; elsewhere bfloat16 is emulated and slower."""
    import torch

    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # an older torch or another platform: keep float32
        return False


def knn_graph(X: np.ndarray, k: int, candidates: int = BF16_CANDIDATES, chunk_size: int = 1024,
              low_precision: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k-nearest-neighbour graph a UMAP is built on: (indices ``[N, k]`` int64, Euclidean distances ``[N, k]`` float32), itself first.

    Below :data:`BF16_KNN_FROM` points (or where :func:`bf16_matmul_is_fast` is false) this is :func:`exact_knn`.
    Beyond, with ``low_precision`` (None: decide as just said), each chunk of rows is scored against all rows in
    bfloat16, the best ``candidates`` per row are kept, and those are re-scored exactly in float32: the distances
    are exact, and a true neighbour is missed only when bfloat16's 8-bit mantissa ranks it below ``candidates``
    others (on the 70,000 Fashion-MNIST embeddings of the shipped SimCLR, 15 neighbours: 99.1 % of the exact
    neighbours found, at 0.17 s per 1,024 rows against 0.28 s exact). umap-learn itself builds its graph with
    NN-descent, an approximate search, from 4,096 points.
    """
    import torch

    X = np.ascontiguousarray(_as_float_array(X))
    n = len(X)
    if low_precision is None:
        low_precision = n >= BF16_KNN_FROM and bf16_matmul_is_fast()
    c = min(max(candidates, k), n)
    if not low_precision or c >= n:
        return exact_knn(X, k)
    with torch.inference_mode():
        Xt = torch.from_numpy(X)
        sq = Xt.pow(2).sum(dim=1)
        Xb, sqb = Xt.bfloat16(), sq.bfloat16()
        idx_out, dist_out = [], []
        for start in range(0, n, chunk_size):
            q = Xt[start:start + chunk_size]
            rough = torch.addmm(sqb, q.bfloat16(), Xb.T, beta=-1, alpha=2)          # [q, N]: 2 q.b - |b|^2, ranks like -|q - b|^2
            cand = rough.topk(c, dim=1).indices                                      # [q, c]
            exact = ((q[:, None, :] - Xt[cand]) ** 2).sum(-1)                         # [q, c] squared distances in float32
            rows = torch.arange(start, start + len(q))[:, None]
            exact = torch.where(cand == rows, torch.zeros_like(exact), exact)          # itself at distance 0, first
            best = exact.topk(k, dim=1, largest=False)
            idx_out.append(cand.gather(1, best.indices))
            dist_out.append(best.values.clamp_min(0).sqrt())
    return torch.cat(idx_out).numpy().astype(np.int64), torch.cat(dist_out).numpy().astype(np.float32)


def umap_is_warm() -> bool:
    """Whether a UMAP has already run in this process (later ones skip numba's compilation)."""
    return _UMAP_WARM


class Projector:
    """Project ``[N, D]`` embeddings to ``n_components`` (2 or 3) dimensions.

    Args:
        method: ``"umap"`` (McInnes et al. 2018), ``"tsne"`` (van der Maaten & Hinton
            2008, scikit-learn's Barnes-Hut) or ``"pca"``.
        n_components: 2 or 3.
        normalize: L2-normalise rows before projecting (cosine geometry).
        random_state: seed of UMAP / t-SNE / PCA's randomised parts.
        exact_knn: UMAP: build the k-nearest-neighbour graph with :func:`knn_graph` (chunked torch
            matrix products on every core: exact below 20,000 points, bfloat16 candidates re-ranked exactly
            beyond) and hand it to UMAP (``precomputed_knn``, with an :class:`ExactSearchIndex` for
            :meth:`transform`) instead of pynndescent's approximate search. Faster on the sizes shown
            here, and it skips pynndescent's numba compilation.
        n_jobs: BLAS / OpenMP threads while fitting (None: half the CPUs, at least 1).
            Few threads on purpose: on a small CPU shared with a web server, OpenMP
            threads spin-waiting for a busy core made t-SNE up to 20x slower.
        **params: passed to the underlying estimator (e.g. ``n_neighbors=30``,
            ``min_dist=0.1`` for UMAP, ``perplexity=50`` for t-SNE).

    Attributes (set by :meth:`fit`):
        embedding_: ``[N, n_components]`` coordinates of the fitted points.
        estimator_: the fitted umap / scikit-learn estimator.
        n_features_in_: D.
        explained_variance_ratio_: PCA only.

    t-SNE has no out-of-sample mapping: :meth:`transform` raises for it; use
    :meth:`fit_transform` on all the points to show.
    """

    def __init__(self, method: str = "umap", n_components: int = 2, normalize: bool = True, random_state: int = 0,
                 exact_knn: bool = True, n_jobs: int | None = None, **params: Any) -> None:
        self.method = method
        self.n_components = n_components
        self.normalize = normalize
        self.random_state = random_state
        self.exact_knn = exact_knn
        self.n_jobs = n_jobs
        self.params = params

    def _threads(self):
        return _limit_threads(self.n_jobs)

    def _check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown projection method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.n_components not in (2, 3):
            raise ValueError(f"n_components must be 2 or 3, got {self.n_components}")

    def _prepare(self, X) -> np.ndarray:
        return l2_normalize(X) if self.normalize else _as_float_array(X)

    def _build(self, X: np.ndarray):
        n = len(X)
        if self.method == "pca":
            from sklearn.decomposition import PCA

            return PCA(n_components=self.n_components, random_state=self.random_state, **self.params)
        if self.method == "tsne":
            from sklearn.manifold import TSNE

            params = {"perplexity": TSNE_DEFAULT_PERPLEXITY, "init": "pca", "learning_rate": "auto"}
            params.update(self.params)
            # each point needs about 3 x perplexity neighbours: capped at (n - 1) / 3 on few points (scikit-learn refuses >= n)
            params["perplexity"] = float(min(params["perplexity"], max(1.0, (n - 1) / 3.0)))
            return TSNE(n_components=self.n_components, random_state=self.random_state, **params)
        umap = _import_umap()
        params = {"n_neighbors": UMAP_DEFAULTS["n_neighbors"], "min_dist": UMAP_DEFAULTS["min_dist"], "metric": "euclidean",
                  "n_jobs": 1, "init": "pca", "n_epochs": umap_epochs(n)}
        params.update(self.params)
        params["n_neighbors"] = int(min(params["n_neighbors"], max(2, n - 1)))
        if self.exact_knn and params["metric"] == "euclidean" and "precomputed_knn" not in params:
            with _limit_threads(os.cpu_count() or 1):  # one large matrix product: every core (the layout stays on one)
                idx, dist = knn_graph(X, params["n_neighbors"])
            params["precomputed_knn"] = (idx, dist, self._fit_index_)  # the index transform() checks fitted rows with
            params["force_approximation_algorithm"] = True  # use the graph at every size (umap-learn ignores it below 4096)
        return umap.UMAP(n_components=self.n_components, random_state=self.random_state, **params)

    def fit(self, X, y=None) -> Projector:
        """Learn the map from ``X`` ``[N, D]``; returns self.

        Raises:
            ProjectionError: fewer points than :func:`min_points` (or, for PCA, fewer features than components),
                non-finite rows, or every row the same vector (a collapsed encoder).
            ValueError: an unknown method or ``n_components`` not 2 or 3.
        """
        global _UMAP_WARM
        self._check()
        raw = _as_float_array(X)
        bad = ~np.isfinite(raw).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ProjectionError(f"{int(bad.sum())} of {len(raw)} embeddings hold NaN or infinite values (rows {', '.join(map(str, rows[:5]))}"
                                  f"{', ...' if len(rows) > 5 else ''}); the encoder diverged or the input is broken")
        if len(raw) > 1 and float(np.ptp(raw, axis=0).max(initial=0.0)) == 0.0:
            raise ProjectionError(f"all {len(raw)} embeddings are the same vector (a collapsed encoder): there is nothing to map")
        Xp = l2_normalize(raw) if self.normalize else raw
        need = min_points(self.method, self.n_components)
        if len(Xp) < need:
            raise ProjectionError(f"{NAMES[self.method]} needs at least {need} points for {self.n_components} dimensions, "
                                  f"and there {'is' if len(Xp) == 1 else 'are'} {len(Xp)}; "
                                  + ("pick a dataset with more images." if self.method == "pca" else "pick PCA, or a dataset with more images."))
        if self.method == "pca" and Xp.shape[1] < self.n_components:
            raise ProjectionError(f"PCA to {self.n_components} components needs at least {self.n_components} features, got {Xp.shape[1]}")
        if self.method == "umap":
            self._fit_index_ = ExactSearchIndex(Xp)
        estimator = self._build(Xp)
        with self._threads(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(knn_search_index|n_jobs value|random_state|NNDescent).*")
            embedding = estimator.fit_transform(Xp)
        if self.method == "umap":
            _UMAP_WARM = True
        self.estimator_ = estimator
        self.embedding_ = np.asarray(embedding, dtype=np.float32)
        self.n_features_in_ = Xp.shape[1]
        if self.method == "pca":
            self.explained_variance_ratio_ = np.asarray(estimator.explained_variance_ratio_)
        return self

    def transform(self, X) -> np.ndarray:
        """Map new points ``[M, D]`` with the fitted map (PCA, UMAP; not t-SNE)."""
        if not hasattr(self, "estimator_"):
            raise RuntimeError("Projector is not fitted: call fit(X) first")
        if self.method == "tsne":
            raise NotImplementedError("t-SNE has no out-of-sample transform; call fit_transform(X) on all the points to show")
        Xp = self._prepare(X)
        if Xp.shape[1] != self.n_features_in_:
            raise ValueError(f"fitted on {self.n_features_in_} features, got {Xp.shape[1]}")
        fitted = self._fitted_rows(Xp) if self.method == "umap" else np.full(len(Xp), -1)
        out = np.empty((len(Xp), self.n_components), dtype=np.float32)
        known = fitted >= 0
        out[known] = self.embedding_[fitted[known]]
        if (~known).any():
            with self._threads(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*(n_jobs value|random_state).*")
                out[~known] = np.asarray(self.estimator_.transform(Xp[~known]), dtype=np.float32)
        return out

    def _fitted_rows(self, Xp: np.ndarray) -> np.ndarray:
        """``[M]`` index of the fitted point each row of ``Xp`` is exactly equal to, or -1.

        UMAP's ``transform`` re-optimises every point it is given from the mean of its neighbours' places, so a point
        that was fitted (an uploaded image that is in the dataset) would land up to a tenth of the map away from its own
        dot; such points get their fitted coordinates instead.
        """
        data = self._fit_index_._raw_data
        idx, _ = self._fit_index_.query(Xp, 1)
        idx = idx[:, 0].astype(np.int64)
        same = (data[idx] == Xp).all(axis=1)
        return np.where(same, idx, -1)

    def fit_transform(self, X, y=None) -> np.ndarray:
        """``fit(X)`` and return :attr:`embedding_` ``[N, n_components]``."""
        return self.fit(X).embedding_


def array_digest(X) -> str:
    """A short content hash of an array (shape, dtype and bytes)."""
    X = np.ascontiguousarray(_as_float_array(X))
    h = hashlib.sha1(str((X.shape, X.dtype.str)).encode())
    h.update(X.view(np.uint8).data)
    return h.hexdigest()[:16]


def projection_key(X, key: dict, method: str, n_components: int, params: dict | None = None) -> dict:
    """The full on-disk cache key of a projection: the caller's ``key`` + method, params and a digest of ``X``."""
    return {**key, "method": method, "n_components": int(n_components), "params": dict(sorted((params or {}).items())), "digest": array_digest(X)}


def is_projection_cached(X, key: dict, method: str, n_components: int, params: dict | None = None) -> bool:
    """Whether :func:`project_cached` would read this projection from disk."""
    return (cache_dir() / "projections" / f"{key_hash(projection_key(X, key, method, n_components, params))}.npz").exists()


def project_cached(X, key: dict, method: str = "umap", n_components: int = 2, params: dict | None = None) -> np.ndarray:
    """``Projector(method, n_components, **params).fit_transform(X)``, cached on disk.

    Args:
        X: ``[N, D]`` embeddings.
        key: what the embeddings are (model fingerprint, dataset, representation, n, ...);
            a digest of ``X`` is added, so a stale key cannot return a wrong map.
        method, n_components, params: as for :class:`Projector`.

    Returns:
        ``[N, n_components]`` float32.
    """
    params = dict(params or {})
    full_key = projection_key(X, key, method, n_components, params)

    def compute() -> dict[str, np.ndarray]:
        return {"coords": Projector(method, n_components, **params).fit_transform(X)}

    return cached_arrays("projections", full_key, compute)["coords"]


def kmeans_labels(X, k: int = 10, normalize: bool = True, random_state: int = 0) -> np.ndarray:
    """k-means cluster ids ``[N]`` (int64) of the rows of ``X`` (on unit vectors by default), for colouring a map."""
    from sklearn.cluster import KMeans

    Xp = l2_normalize(X) if normalize else _as_float_array(X)
    k = int(max(1, min(k, len(Xp))))
    with _limit_threads(None):
        return KMeans(n_clusters=k, n_init=3, random_state=random_state).fit_predict(Xp).astype(np.int64)


def _warm_stamp():
    from importlib.metadata import version

    return cache_dir() / "numba" / f".warm-umap{version('umap-learn')}-numba{version('numba')}"


if __name__ == "__main__":  # ``python -m ssl_viz.analysis.projection``: fill numba's cache once (make run/test, Docker build)
    stamp = _warm_stamp()
    if stamp.exists():
        print(f"UMAP kernels already compiled in {stamp.parent}")
    else:
        seconds = warm_up()
        stamp.touch()
        print(f"UMAP kernels compiled and cached in {os.environ.get('NUMBA_CACHE_DIR', stamp.parent)} ({seconds:.1f} s)")
