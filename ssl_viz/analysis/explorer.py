"""What the embedding explorer computes about its points: a focus's nearest neighbours, what a selection holds,
two encoders' maps aligned, a new image placed on a map, and the files a user downloads.

Every function is pure (arrays in, arrays / tables / bytes out); :mod:`ssl_viz.ui.explorer` draws them.

>>> rows, sims = cosine_neighbours(embeddings, focus=12, k=10)   # the 10 nearest, itself left out
>>> count_text(labels[selected], class_names)                   # '47 Shirt, 12 T-shirt/top'
>>> aligned, disparity = procrustes_align(map_a, map_b)         # map_b turned, scaled and moved onto map_a
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd


class ExplorerError(ValueError):
    """The embeddings cannot be explored as asked (constant, non-finite, too few points); the message says why."""


def check_explorable(embeddings: np.ndarray, what: str = "the embeddings") -> None:
    """Raise :class:`ExplorerError` with one sentence when ``embeddings [N, D]`` cannot be mapped.

    Non-finite values (NaN / inf) and constant embeddings (every row the same vector, so distances and
    neighbours are all ties and a map would be an arbitrary scatter) are refused.
    """
    X = np.asarray(embeddings, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ExplorerError(f"{what} must be a non-empty [N, D] array, got shape {X.shape}")
    bad = int((~np.isfinite(X)).any(axis=1).sum())
    if bad:
        raise ExplorerError(f"{what} contain NaN or infinite values in {bad} of {len(X)} rows: the model's output is broken "
                            "for these images, so there is no map to draw (retrain, or pick another checkpoint).")
    if len(X) > 1 and float(np.ptp(X, axis=0).max()) <= 1e-7 * max(1.0, float(np.abs(X).max())):
        raise ExplorerError(f"{what} are constant: every image maps to the same vector (a collapsed representation), "
                            "so neighbours and maps would be arbitrary.")


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def cosine_neighbours(embeddings: np.ndarray, focus: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``embeddings [N, D]`` most cosine-similar to row ``focus``, the focus itself left out.

    Returns ``(rows [k'] int64, cosine similarities [k'] float32)`` in decreasing similarity, ``k' = min(k, N - 1)``;
    ties are broken by the lower row. Raises IndexError for a focus outside ``[0, N)``.
    """
    Z = _unit(embeddings)
    if not 0 <= focus < len(Z):
        raise IndexError(f"focus {focus} is outside the {len(Z)} points of the map")
    return query_neighbours(Z, Z[focus], k, exclude=focus)


def query_neighbours(embeddings: np.ndarray, query: np.ndarray, k: int = 10, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``embeddings [N, D]`` most cosine-similar to ``query [D]`` (``exclude``: a row left out).

    Returns ``(rows [k'] int64, similarities [k'] float32)``, most similar first, ties by the lower row.
    """
    Z = _unit(embeddings)
    q = _unit(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
    sims = Z @ q
    if exclude is not None:
        sims[exclude] = -np.inf
    k = int(min(k, len(Z) - (exclude is not None)))
    order = np.lexsort((np.arange(len(Z)), -sims))[:k]   # by similarity, then by row
    return order.astype(np.int64), sims[order].astype(np.float32)


def class_counts(labels: np.ndarray, class_names: Sequence[str]) -> list[tuple[str, int]]:
    """``[(class name, count), ...]`` of ``labels [n]``, most frequent first (ties by name); -1 counts as ``unlabelled``."""
    labels = np.asarray(labels, dtype=np.int64)
    values, counts = np.unique(labels, return_counts=True)
    names = [class_names[v] if 0 <= v < len(class_names) else "unlabelled" for v in values]
    return sorted(zip(names, (int(c) for c in counts)), key=lambda t: (-t[1], t[0]))


def count_text(labels: np.ndarray, class_names: Sequence[str], limit: int = 8) -> str:
    """``"47 Shirt, 12 T-shirt/top, ..."``: the class counts of a selection, the ``limit`` largest named."""
    counts = class_counts(labels, class_names)
    if len(counts) <= limit + 1:  # one class left over is named rather than summarised
        return ", ".join(f"{c:,} {name}" for name, c in counts)
    rest = sum(c for _, c in counts[limit:])
    return ", ".join(f"{c:,} {name}" for name, c in counts[:limit]) + f" and {rest:,} in {len(counts) - limit} other classes"


def selection_table(rows: np.ndarray, ids: Sequence[str], labels: np.ndarray, class_names: Sequence[str],
                    coords: np.ndarray) -> pd.DataFrame:
    """One row per selected point: ``index`` (its id: a file name, or ``split:position`` in a built-in dataset),
    ``label`` (class name), ``x``, ``y`` (and ``z`` for a 3-D map) map coordinates.

    Args:
        rows: ``[n]`` positions in the map of the selected points.
        ids: ``[N]`` id of every map point. labels: ``[N]`` class ids (-1: unlabelled). coords: ``[N, 2|3]``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    coords = np.asarray(coords)
    names = [class_names[y] if 0 <= y < len(class_names) else "unlabelled" for y in np.asarray(labels)[rows]]
    table = pd.DataFrame({"index": [ids[r] for r in rows], "label": names})
    for j, axis in enumerate("xyz"[: coords.shape[1]]):
        table[axis] = coords[rows, j].astype(float)
    return table


def embeddings_npz(embeddings: np.ndarray, ids: Sequence[str], labels: np.ndarray, class_names: Sequence[str],
                   coords: np.ndarray | None = None, **metadata: str) -> bytes:
    """The bytes of an ``.npz`` with ``embeddings [N, D]`` float32, ``ids [N]`` str, ``labels [N]`` int64,
    ``class_names [C]`` str, ``coords [N, 2|3]`` when given, and string ``metadata`` (model, dataset, representation)."""
    buf = io.BytesIO()
    arrays = {"embeddings": np.asarray(embeddings, dtype=np.float32), "ids": np.asarray(list(ids), dtype=str),
              "labels": np.asarray(labels, dtype=np.int64), "class_names": np.asarray(list(class_names), dtype=str)}
    if coords is not None:
        arrays["coords"] = np.asarray(coords, dtype=np.float32)
    arrays.update({k: np.asarray(str(v)) for k, v in metadata.items()})
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def procrustes_align(reference: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, float]:
    """``moving [N, d]`` rotated (or reflected), uniformly scaled and translated onto ``reference [N, d]`` (row i of
    both is the same image), and the disparity left: the sum of squared differences after alignment, divided by
    the reference's sum of squares about its centroid (0: the same map up to a similarity transform; 1: unrelated).

    Orthogonal Procrustes (Schönemann 1966) with the optimal scale: with centred ``A``, ``B`` and the SVD
    ``B^T A = U S V^T``, the rotation is ``R = U V^T`` and the scale ``s = trace(S) / |B|_F^2``
    (scipy.linalg.orthogonal_procrustes gives ``R`` and ``trace(S)``). A map's orientation and scale carry no
    meaning, so two encoders' maps are comparable only after this.
    """
    from scipy.linalg import orthogonal_procrustes

    A = np.asarray(reference, dtype=np.float64)
    B = np.asarray(moving, dtype=np.float64)
    if A.shape != B.shape or A.ndim != 2:
        raise ValueError(f"maps must have the same [N, d] shape, got {A.shape} and {B.shape}")
    a0, b0 = A - A.mean(0), B - B.mean(0)
    if not (a0 ** 2).sum() > 0 or not (b0 ** 2).sum() > 0:
        raise ExplorerError("one of the maps has all its points at one place; there is nothing to align")
    R, trace = orthogonal_procrustes(b0, a0)
    scale = trace / (b0 ** 2).sum()
    aligned = scale * b0 @ R + A.mean(0)
    disparity = float(((aligned - A) ** 2).sum() / (a0 ** 2).sum())
    return aligned.astype(np.float32), disparity


def neighbour_placement(coords: np.ndarray, rows: np.ndarray, similarities: np.ndarray) -> np.ndarray:
    """Where a new point goes on a map that has no out-of-sample transform (t-SNE): the mean of its nearest
    neighbours' positions ``coords[rows]``, weighted by their (positive part of the) cosine similarity.

    This is the initial position openTSNE's and umap-learn's ``transform`` start from before optimising; the UI
    labels it as such. Returns ``[d]``.
    """
    coords = np.asarray(coords, dtype=np.float64)[np.asarray(rows, dtype=np.int64)]
    w = np.clip(np.asarray(similarities, dtype=np.float64), 0.0, None)
    w = w / w.sum() if w.sum() > 0 else np.full(len(coords), 1.0 / len(coords))
    return (w[:, None] * coords).sum(0).astype(np.float32)
