"""2-D / 3-D maps of embeddings: UMAP, t-SNE and PCA behind one scikit-learn-style estimator.

>>> coords = Projector("pca", n_components=2).fit_transform(embeddings)   # [N, 2]

By default the rows are L2-normalised first, so the map shows the cosine
geometry the contrastive loss works in (Euclidean distance between unit
vectors is a monotone function of their cosine: ``|a - b|^2 = 2 - 2 cos(a, b)``).

UMAP is compiled by numba on its first call in a process (30-40 s); the
compiled code is kept in ``<cache>/numba`` (``NUMBA_CACHE_DIR``) so that later
processes start faster, and :func:`project_cached` keeps finished projections
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
UMAP_APPROXIMATE_FROM = 4096  # umap switches from exact distances to pynndescent at this many points
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

    return umap


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
        exact_knn: UMAP on >= 4096 points: compute the exact k-nearest-neighbour graph with a
            chunked torch matrix product and hand it to UMAP (``precomputed_knn``) instead of
            pynndescent's approximate search. Exact, and it skips pynndescent's numba
            compilation (~45 s the first time per process); :meth:`transform` of new points is
            then unavailable for that fit (UMAP keeps no search index).
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

            params = {"perplexity": float(min(30.0, max(1.0, (n - 1) / 3.0))), "init": "pca", "learning_rate": "auto"}
            params.update(self.params)
            return TSNE(n_components=self.n_components, random_state=self.random_state, **params)
        umap = _import_umap()
        params = {"n_neighbors": int(min(15, max(2, n - 1))), "min_dist": 0.1, "metric": "euclidean", "n_jobs": 1}
        params.update(self.params)
        if self.exact_knn and n >= UMAP_APPROXIMATE_FROM and params["metric"] == "euclidean" and "precomputed_knn" not in params:
            params["precomputed_knn"] = exact_knn(X, params["n_neighbors"])
        return umap.UMAP(n_components=self.n_components, random_state=self.random_state, **params)

    def fit(self, X, y=None) -> Projector:
        """Learn the map from ``X`` ``[N, D]``; returns self.

        Raises:
            ProjectionError: fewer points than :func:`min_points` (or, for PCA, fewer features than components).
            ValueError: an unknown method or ``n_components`` not 2 or 3.
        """
        global _UMAP_WARM
        self._check()
        Xp = self._prepare(X)
        need = min_points(self.method, self.n_components)
        if len(Xp) < need:
            raise ProjectionError(f"{NAMES[self.method]} needs at least {need} points for {self.n_components} dimensions, "
                                  f"and there {'is' if len(Xp) == 1 else 'are'} {len(Xp)}; "
                                  + ("pick a dataset with more images." if self.method == "pca" else "pick PCA, or a dataset with more images."))
        if self.method == "pca" and Xp.shape[1] < self.n_components:
            raise ProjectionError(f"PCA to {self.n_components} components needs at least {self.n_components} features, got {Xp.shape[1]}")
        estimator = self._build(Xp)
        with self._threads(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(knn_search_index|n_jobs value|random_state).*")
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
        if self.method == "umap" and getattr(self.estimator_, "_knn_search_index", True) is None:
            raise NotImplementedError("this UMAP was fitted on an exact precomputed kNN graph and keeps no search index; "
                                      "fit with exact_knn=False to transform new points")
        Xp = self._prepare(X)
        if Xp.shape[1] != self.n_features_in_:
            raise ValueError(f"fitted on {self.n_features_in_} features, got {Xp.shape[1]}")
        with self._threads():
            return np.asarray(self.estimator_.transform(Xp), dtype=np.float32)

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
