"""Nearest-neighbour retrieval in embedding space, and how often the neighbours share the query's label.

>>> r = Retriever(k=10).fit(bank)                       # bank [N, D]
>>> scores, idx = r.query(bank[:5], exclude=np.arange(5))   # [5, 10] each, self excluded

Exact search: the query block times the bank, then ``topk``, in chunks of
queries so memory stays ``chunk_size x N``. With ``metric="cosine"`` both
sides are L2-normalised, so scores are cosine similarities in [-1, 1].

precision@K of a query is the share of its K neighbours with the query's label::

    P@K(q) = (1 / K) * sum_{j in NN_K(q)} [y_j = y_q]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from ssl_viz.data.decode import channels_mode, decode_image, prepare_image

METRICS = ("cosine", "dot", "euclidean")


def _as_tensor(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float().cpu()
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D array [N, D], got shape {tuple(t.shape)}")
    return t


class Retriever:
    """Exact k-nearest-neighbour search over a bank of embeddings.

    Args:
        k: neighbours returned per query (capped at the bank size).
        metric: ``"cosine"`` (default), ``"dot"`` (raw inner product) or
            ``"euclidean"`` (score = minus the distance, so higher is nearer).
        chunk_size: queries scored at once.

    Attributes (set by :meth:`fit`):
        bank_: ``[N, D]`` float32 torch tensor (unit rows for cosine).
        n_bank_: N.
    """

    def __init__(self, k: int = 10, metric: str = "cosine", chunk_size: int = 1024) -> None:
        self.k = k
        self.metric = metric
        self.chunk_size = chunk_size

    def fit(self, bank, y=None) -> Retriever:
        """Store the bank ``[N, D]``; returns self."""
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        bank_t = _as_tensor(bank)
        if len(bank_t) == 0:
            raise ValueError("the bank is empty")
        self.bank_ = F.normalize(bank_t, dim=1) if self.metric == "cosine" else bank_t
        self.n_bank_ = len(bank_t)
        self._sq_norms = self.bank_.pow(2).sum(dim=1) if self.metric == "euclidean" else None
        return self

    def _scores(self, q: torch.Tensor) -> torch.Tensor:
        if self.metric == "cosine":
            return F.normalize(q, dim=1) @ self.bank_.T
        if self.metric == "dot":
            return q @ self.bank_.T
        # ranks like -|q - b|^2 = -|q|^2 + 2 q.b - |b|^2 without the per-query constant; turned into
        # distances for the k winners only (query), so the [q, N] block costs one matrix product
        return torch.addmm(self._sq_norms, q, self.bank_.T, beta=-1, alpha=2)

    @torch.inference_mode()
    def query(self, q, k: int | None = None, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best bank items of each query.

        Args:
            q: ``[Q, D]`` query embeddings.
            k: overrides the ``k`` given at construction.
            exclude: ``[Q]`` bank index to leave out for each query (the query
                itself when it lies in the bank; ``-1`` excludes nothing).

        Returns:
            (scores ``[Q, k]`` float32, indices ``[Q, k]`` int64), best first.
        """
        if not hasattr(self, "bank_"):
            raise RuntimeError("Retriever is not fitted: call fit(bank) first")
        qt = _as_tensor(q)
        if qt.shape[1] != self.bank_.shape[1]:
            raise ValueError(f"queries have {qt.shape[1]} dims, the bank {self.bank_.shape[1]}")
        excl = None
        if exclude is not None:
            excl = torch.as_tensor(np.asarray(exclude), dtype=torch.long).reshape(-1)
            if len(excl) != len(qt):
                raise ValueError(f"exclude needs one index per query ({len(qt)}), got {len(excl)}")
        k = min(self.k if k is None else k, self.n_bank_ - (1 if excl is not None else 0))
        k = max(k, 0)
        scores, indices = [], []
        for start in range(0, len(qt), self.chunk_size):
            s = self._scores(qt[start:start + self.chunk_size])                 # [q, N]
            if excl is not None:
                e = excl[start:start + self.chunk_size]
                rows = torch.nonzero(e >= 0).reshape(-1)
                s[rows, e[rows]] = -float("inf")
            top = s.topk(k, dim=1)                                               # [q, k]
            values = top.values
            if self.metric == "euclidean":  # minus the distance: -sqrt(|q|^2 - (2 q.b - |b|^2))
                qn = qt[start:start + self.chunk_size].pow(2).sum(dim=1, keepdim=True)
                values = -(qn - values).clamp_min(0).sqrt()
            scores.append(values)
            indices.append(top.indices)
        if not scores:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        return torch.cat(scores).numpy().astype(np.float32), torch.cat(indices).numpy().astype(np.int64)


def precision_at_k(neighbor_labels, query_labels) -> np.ndarray:
    """Share of each query's neighbours with its label ``[Q]`` (from ``[Q, K]`` and ``[Q]``)."""
    nl = np.asarray(neighbor_labels)
    ql = np.asarray(query_labels).reshape(-1, 1)
    if nl.ndim != 2 or len(nl) != len(ql):
        raise ValueError(f"need neighbor_labels [Q, K] and query_labels [Q], got {nl.shape} and {ql.shape[:1]}")
    if nl.shape[1] == 0:
        return np.full(len(nl), np.nan)
    return (nl == ql).mean(axis=1)


def per_class_precision(neighbor_labels, query_labels, class_names: list[str] | None = None) -> pd.DataFrame:
    """Mean precision@K per query class: columns ``class``, ``name``, ``queries``, ``precision``."""
    prec = precision_at_k(neighbor_labels, query_labels)
    ql = np.asarray(query_labels)
    rows = []
    for c in np.unique(ql):
        mask = ql == c
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        rows.append({"class": int(c), "name": name, "queries": int(mask.sum()), "precision": float(prec[mask].mean())})
    return pd.DataFrame(rows, columns=["class", "name", "queries", "precision"])


def worst_queries(neighbor_labels, query_labels, n: int = 8) -> pd.DataFrame:
    """The ``n`` queries whose neighbours most disagree with their label.

    Returns a DataFrame sorted by precision (lowest first, ties by query
    position) with columns ``query`` (row in the query array), ``label``,
    ``precision`` and ``majority`` (the most common neighbour label).
    """
    nl = np.asarray(neighbor_labels)
    ql = np.asarray(query_labels)
    prec = precision_at_k(nl, ql)
    order = np.lexsort((np.arange(len(prec)), prec))[:n]
    majority = []
    for i in order:
        values, counts = np.unique(nl[i], return_counts=True)
        majority.append(int(values[np.argmax(counts)]) if len(values) else -1)
    return pd.DataFrame({"query": order.astype(np.int64), "label": ql[order].astype(np.int64),
                         "precision": prec[order], "majority": np.asarray(majority, dtype=np.int64)})


def prepare_query_image(image: Image.Image, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """An opened picture as one dataset-like image: uint8 ``[1, channels, H, W]``.

    Decoded as a dataset file is (:func:`ssl_viz.data.decode.prepare_image`): EXIF orientation applied,
    16-bit scaled, transparency over white, converted to grayscale or RGB, short side resized (bicubic)
    and centre-cropped to ``size`` = (H, W).
    """
    return torch.from_numpy(prepare_image(image, size, channels_mode(channels))).unsqueeze(0)


def read_query_image(file, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """An image file (path or file-like, e.g. an upload) as a dataset image: uint8 ``[1, channels, H, W]``.

    The same pixels as the file would get inside a folder dataset of that size and channels
    (:func:`ssl_viz.data.decode.decode_image`). Raises ValueError, with the decoder's own words, when the
    file is not a readable image (junk bytes, a truncated file, a decompression bomb).
    """
    return torch.from_numpy(decode_image(file, size, channels_mode(channels))).unsqueeze(0)


def bank_position(indices, index: int) -> int | None:
    """Where dataset image ``index`` sits in a bank of the images ``indices`` (sorted ``[N]``), or None if it is not there."""
    indices = np.asarray(indices)
    pos = int(np.searchsorted(indices, index))
    return pos if pos < len(indices) and indices[pos] == index else None
