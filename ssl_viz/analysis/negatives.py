"""The negatives problem: hardest negatives, false negatives, and which classes a representation serves badly.

Contrastive losses push every other image of the batch away from the anchor, but
some of those "negatives" share the anchor's class (**false negatives**, the
sampling bias of Chuang et al. 2020, "Debiased Contrastive Learning").

Expected false-negative rate. A batch of ``B`` images is a uniform random subset,
drawn without replacement, of a dataset of ``N`` images with ``n_c`` images in class
``c`` (``ssl_viz.train.Trainer.batches`` cuts a random permutation into batches).
Given the anchor, its ``B - 1`` negatives are a uniform random subset of the other
``N - 1`` images, so each is of the anchor's class with probability
``(n_c - 1) / (N - 1)``; averaging over the anchor's class (probability ``n_c / N``)::

    E[false-negative rate] = sum_c n_c (n_c - 1) / (N (N - 1))      (-> sum_c p_c^2 as N -> inf)

It does not depend on ``B`` (SimCLR's 2B views have 2(B - 1) negatives, two per other
image, in the same proportion). What grows with ``B`` is the expected number of false
negatives per anchor, ``(B - 1)`` times that rate, and the chance that an anchor has at
least one, a hypergeometric tail::

    P(>= 1) = 1 - sum_c (n_c / N) C(N - n_c, B - 1) / C(N - 1, B - 1)

With ``C`` balanced classes the rate is about ``1 / C``: few classes, many false negatives.

Functions return numbers, DataFrames or plotly figures; nothing here calls Streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ssl_viz.analysis.pairs import random_batch
from ssl_viz.evaluate import KNN_K, KNN_TEMPERATURE

# ----------------------------------------------------------------------------- false negatives: theory


def class_counts(labels, num_classes: int = 0) -> np.ndarray:
    """Images per class ``[max(C, num_classes)]`` (int64) of labels ``[N]``; negative labels (unlabelled) are left out."""
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    return np.bincount(y[y >= 0], minlength=num_classes)


def _counts(class_counts) -> np.ndarray:
    counts = np.asarray(class_counts, dtype=np.float64)
    counts = counts[counts > 0]
    if counts.sum() < 2:
        raise ValueError("need at least two labelled images")
    return counts


def expected_false_negative_rate(class_counts: Sequence[int], replacement: bool = False) -> float:
    """Expected share of an anchor's negatives that share its class.

    Without replacement (a batch is a random subset of a finite dataset, as in training):
    ``sum_c n_c (n_c - 1) / (N (N - 1))``; with replacement (i.i.d. draws): ``sum_c p_c^2``.
    """
    n_c = _counts(class_counts)
    n = n_c.sum()
    if replacement:
        return float(((n_c / n) ** 2).sum())
    return float((n_c * (n_c - 1)).sum() / (n * (n - 1)))


def _log_comb(n: float, k: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def probability_any_false_negative(class_counts: Sequence[int], batch_size: int) -> float:
    """``P(an anchor has >= 1 false negative in a batch of B)``: ``1 - sum_c (n_c/N) C(N-n_c, B-1) / C(N-1, B-1)``."""
    n_c = _counts(class_counts)
    n = int(n_c.sum())
    b = int(batch_size)
    if not 1 <= b <= n:
        raise ValueError(f"batch size must be in [1, {n}], got {batch_size}")
    p_none = 0.0
    for c in n_c:
        if n - c >= b - 1:
            p_none += (c / n) * math.exp(_log_comb(n - c, b - 1) - _log_comb(n - 1, b - 1))
    return float(1.0 - p_none)


# ----------------------------------------------------------------------------- false negatives: measured


def measured_false_negatives(labels, batch_size: int, n_batches: int = 200, seed: int = 0, min_pairs: int = 20_000) -> dict[str, float]:
    """Sample batches as the trainer does (a random permutation cut into batches of ``B``) and count.

    At least ``n_batches`` batches, and more for small ``B`` until ``min_pairs`` (anchor, negative)
    pairs were seen, so the estimate's noise does not grow as the batches shrink.

    Returns ``{"rate": share of (anchor, negative) pairs of the same class,
    "any": share of anchors with at least one, "per_anchor": mean number per anchor}``.
    """
    y = torch.as_tensor(np.asarray(labels)).long()
    y = y[y >= 0]
    n, b = len(y), int(batch_size)
    if not 2 <= b <= n:
        raise ValueError(f"batch size must be in [2, {n}], got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    n_batches = max(n_batches, math.ceil(min_pairs / (b * (b - 1))))
    same_total, any_total, anchors = 0.0, 0.0, 0
    done = 0
    while done < n_batches:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - b + 1, b):
            yb = y[perm[start:start + b]]
            same = (yb[:, None] == yb[None, :]).sum(1) - 1                # [B] same-class negatives per anchor
            same_total += float(same.sum())
            any_total += float((same > 0).sum())
            anchors += b
            done += 1
            if done >= n_batches:
                break
    return {"rate": same_total / (anchors * (b - 1)), "any": any_total / anchors, "per_anchor": same_total / anchors}


def false_negative_table(labels, batch_sizes: Sequence[int] = (16, 64, 256), num_classes: Sequence[int] | None = None,
                         n_batches: int = 200, seed: int = 0):
    """Measured and expected false negatives for each (number of classes, batch size).

    ``num_classes``: keep only the images of the first ``C`` classes, for each ``C`` listed
    (default: all classes). Columns: ``classes, batch_size, images, measured_rate,
    expected_rate, iid_rate, measured_any, expected_any, per_anchor, expected_per_anchor``.
    """
    import pandas as pd

    y = np.asarray(labels)
    y = y[y >= 0]
    total = int(y.max()) + 1 if len(y) else 0
    rows = []
    for c in (num_classes or [total]):
        sub = y[y < c]
        counts = np.bincount(sub, minlength=c)
        for b in batch_sizes:
            if b > len(sub) or b < 2:
                continue
            m = measured_false_negatives(sub, b, n_batches, seed)
            rate = expected_false_negative_rate(counts)
            rows.append({"classes": int((counts > 0).sum()), "batch_size": int(b), "images": len(sub),
                         "measured_rate": m["rate"], "expected_rate": rate,
                         "iid_rate": expected_false_negative_rate(counts, replacement=True),
                         "measured_any": m["any"], "expected_any": probability_any_false_negative(counts, b),
                         "per_anchor": m["per_anchor"], "expected_per_anchor": (b - 1) * rate})
    return pd.DataFrame(rows)


def false_negative_figure(table):
    """Two panels: false-negative rate and P(anchor has >= 1), measured (markers) vs expected (lines), vs batch size."""
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    fig = make_subplots(1, 2, subplot_titles=("share of negatives that are false", "anchors with >= 1 false negative"))
    for i, (c, part) in enumerate(table.groupby("classes")):
        color = qualitative.Plotly[i % len(qualitative.Plotly)]
        for col, (measured, expected) in enumerate((("measured_rate", "expected_rate"), ("measured_any", "expected_any")), start=1):
            fig.add_scatter(x=part["batch_size"], y=part[expected], mode="lines", line=dict(color=color), name=f"{c} classes: expected",
                            legendgroup=str(c), showlegend=col == 1, row=1, col=col)
            fig.add_scatter(x=part["batch_size"], y=part[measured], mode="markers", marker=dict(color=color, size=9, symbol="x"),
                            name=f"{c} classes: measured", legendgroup=str(c), showlegend=col == 1, row=1, col=col)
    sizes = sorted(set(table["batch_size"]))
    fig.update_xaxes(type="log", title="batch size B", tickvals=sizes, ticktext=[str(b) for b in sizes])
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=40, b=10))
    return fig


# ----------------------------------------------------------------------------- hardest negatives


@dataclass
class HardNegatives:
    """Each anchor's ``k`` most similar other images in a batch.

    Attributes:
        indices: ``[B, k]`` batch positions of the negatives, most similar first.
        similarity: ``[B, k]`` their cosine similarity to the anchor.
        same_class: ``[B, k]`` bool, True where the negative shares the anchor's label
            (a false negative); all False without labels.
    """

    indices: torch.Tensor
    similarity: torch.Tensor
    same_class: torch.Tensor

    @property
    def false_negative_share(self) -> float:
        """Share of the hardest negatives that are false negatives."""
        return float(self.same_class.float().mean()) if self.same_class.numel() else 0.0


def hardest_negatives(embeddings: torch.Tensor, labels: torch.Tensor | None = None, k: int = 5) -> HardNegatives:
    """The ``k`` hardest (most similar) negatives of every anchor among the other rows of ``embeddings [B, D]``."""
    z = F.normalize(torch.as_tensor(embeddings).float(), dim=1)
    b = z.shape[0]
    if b < 2:
        raise ValueError("need a batch of at least 2")
    k = min(k, b - 1)
    sim = (z @ z.T).fill_diagonal_(-float("inf"))
    top, idx = sim.topk(k, dim=1)
    if labels is None:
        same = torch.zeros_like(idx, dtype=torch.bool)
    else:
        y = torch.as_tensor(labels).long()
        same = (y[idx] == y[:, None]) & (y[:, None] >= 0)
    return HardNegatives(idx, top, same)


def batch_hardest_negatives(embed_fn, dataset, batch_size: int, k: int = 5, seed: int = 0) -> tuple[torch.Tensor, HardNegatives]:
    """A random batch of ``dataset`` (:func:`~ssl_viz.analysis.pairs.random_batch`), embedded, and its hardest negatives.

    ``embed_fn``: images ``[B, C, H, W]`` in [0, 1] -> ``[B, D]``; ``dataset``: an
    :class:`~ssl_viz.data.ImageDataset` (its labels mark the false negatives). Returns (the batch's
    dataset indices ``[B]``, :func:`hardest_negatives` of its embeddings). Errors of ``embed_fn`` propagate.
    """
    pick = random_batch(len(dataset), batch_size, seed)
    with torch.inference_mode():
        z = embed_fn(dataset.float_images(pick)).float()
    return pick, hardest_negatives(z, dataset.labels[pick], k)


# ----------------------------------------------------------------------------- debiased loss on a batch


@torch.no_grad()
def debiased_losses(z1: torch.Tensor, z2: torch.Tensor, temperature: float, tau_plus: Sequence[float]) -> np.ndarray:
    """NT-Xent of one batch of two views ``[N, D]`` for each class prior ``tau_plus`` (Chuang et al. 2020; 0 = plain)."""
    from ssl_viz.losses import nt_xent

    return np.array([float(nt_xent(z1, z2, temperature, tau_plus=float(t))) for t in tau_plus])


# ----------------------------------------------------------------------------- bias: per-class numbers


def class_bias(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, test_labels: torch.Tensor,
               class_names: Sequence[str], k: int = KNN_K, temperature: float = KNN_TEMPERATURE):
    """Per-class kNN accuracy and uniformity (Wang & Isola 2020) on the test set, worst kNN first.

    Columns: ``class, n_test, knn_top1, uniformity`` (lower = the class is spread out more;
    close to 0 = it collapsed to a point) and ``knn_gap`` (class accuracy minus the mean).
    """
    import pandas as pd

    from ssl_viz.evaluate import per_class_knn_accuracy, per_class_uniformity

    ytr, yte = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels).long()
    acc = per_class_knn_accuracy(train_features, ytr, test_features, yte, k=k, temperature=temperature)
    unif = per_class_uniformity(test_features, yte)
    counts = np.bincount(yte.numpy(), minlength=len(acc))
    num = max(len(acc), len(unif), len(class_names))
    rows = []
    for c in range(num):
        rows.append({"class": class_names[c] if c < len(class_names) else str(c), "n_test": int(counts[c]) if c < len(counts) else 0,
                     "knn_top1": float(acc[c]) if c < len(acc) else float("nan"),
                     "uniformity": float(unif[c]) if c < len(unif) else float("nan")})
    df = pd.DataFrame(rows)
    df["knn_gap"] = df["knn_top1"] - float(np.nanmean(df["knn_top1"]))
    return df.sort_values("knn_top1", kind="stable").reset_index(drop=True)


def sampled_class_bias(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], train_labels, test_labels,
                       class_names: Sequence[str], k: int = KNN_K, temperature: float = KNN_TEMPERATURE):
    """:func:`class_bias` of embedded samples of a train and a test split.

    ``train`` and ``test``: (embeddings ``[n, D]``, the sample's indices into the split ``[n]``), as
    ``ssl_viz.ui.loaders.get_embeddings`` returns them; ``train_labels`` / ``test_labels``: the whole
    splits' labels ``[N]``.
    """
    (tr, tr_idx), (te, te_idx) = train, test
    ytr, yte = torch.as_tensor(train_labels), torch.as_tensor(test_labels)
    return class_bias(torch.as_tensor(tr), ytr[torch.as_tensor(tr_idx)], torch.as_tensor(te), yte[torch.as_tensor(te_idx)],
                      class_names, k=k, temperature=temperature)


def compare_bias(tables: dict[str, object]):
    """Side by side: one row per class, ``knn_top1`` and ``uniformity`` per model (``"<model>: knn_top1"``)."""
    import pandas as pd

    out = None
    for name, df in tables.items():
        part = df.set_index("class")[["knn_top1", "uniformity"]].add_prefix(f"{name}: ")
        out = part if out is None else out.join(part, how="outer")
    if out is None:
        return pd.DataFrame()
    return out.reset_index()


def bias_figure(tables: dict[str, object]):
    """Grouped bars of per-class kNN accuracy, one colour per model (classes in the first model's order)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    order = None
    for name, df in tables.items():
        order = order or list(df["class"])
        fig.add_bar(x=df["class"], y=df["knn_top1"], name=name, hovertemplate="%{x}: %{y:.3f}<extra>" + name + "</extra>")
    fig.update_layout(barmode="group", height=340, margin=dict(l=10, r=10, t=40, b=10), yaxis=dict(range=[0, 1], title="kNN top-1"),
                      title="per-class kNN accuracy (worst classes first)",
                      xaxis=dict(type="category", categoryorder="array", categoryarray=order or []))
    return fig
