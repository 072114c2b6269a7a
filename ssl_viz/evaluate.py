"""The field's evaluation protocols on frozen features.

- :func:`knn_predict` / :func:`knn_accuracy`: weighted kNN (Wu et al. 2018, InstDisc):
  cosine similarity to the k nearest training features, each neighbour votes
  for its class with weight exp(s / T); defaults k=200, T=0.1.
- :func:`linear_probe`: a linear classifier trained on frozen features.
- :func:`alignment` and :func:`uniformity`: Wang & Isola (2020), on L2-normalised
  features, ``align = E ||f(x) - f(x+)||^alpha``, ``unif = log E exp(-t ||f(x) - f(y)||^2)``.
- :func:`recall_at_k`: share of queries with a same-class item among their top-k.
- :func:`embed_dataset`: features of a dataset in batches under ``inference_mode``; under ``torchrun``,
  :func:`shard_rows` gives each rank one contiguous slice of the rows and :func:`gather_rows` puts the
  slices back together, in order, on rank 0 (``python -m ssl_viz embed`` does both).
- :func:`check_embeddings`: refuses NaN / inf embeddings and rows whose norm overflows float32
  (:class:`EmbeddingError`); :func:`unit_rows` normalises rows safely (no zero rows from overflow).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

# The weighted kNN protocol of InstDisc (Wu et al. 2018) as used by every figure this project reports.
KNN_K = 200
KNN_TEMPERATURE = 0.1


# A row whose L2 norm reaches sqrt(float32 max) ~ 1.8e19 has a squared norm that overflows float32:
# F.normalize then divides by inf and returns a zero vector (alignment and uniformity would read 0.0).
FLOAT32_NORM_LIMIT = math.sqrt(torch.finfo(torch.float32).max)
KNN_MAX_ELEMENTS = 1 << 26  # floats held per chunk of queries by the kNN ([chunk, bank] similarities, [chunk, classes] votes)


class EmbeddingError(ValueError):
    """Embeddings that are not numbers (NaN / inf) or too large to normalise in float32; the message says how many rows."""


def check_embeddings(z, what: str = "embeddings"):
    """``z`` itself (``[N, D]``, torch or numpy) when every value is finite and every row's norm fits float32.

    Raises:
        EmbeddingError: one sentence naming ``what``, how many rows are bad and the likely cause (NaN/inf
            from corrupt weights or BatchNorm statistics; a norm overflowing float32).
    """
    t = torch.as_tensor(z)
    if not t.is_floating_point() or t.numel() == 0:
        return z
    t = t.reshape(len(t), -1)
    finite = torch.isfinite(t).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise EmbeddingError(f"{what}: {bad} of {len(t)} rows are not finite (NaN or inf); the model's weights or "
                             "BatchNorm statistics are probably corrupt")
    peak = t.abs().amax(dim=1)
    risky = peak >= FLOAT32_NORM_LIMIT / math.sqrt(t.shape[1])  # only these rows can overflow
    if bool(risky.any()):
        norms = t[risky].double().norm(dim=1)
        over = norms >= FLOAT32_NORM_LIMIT
        if bool(over.any()):
            raise EmbeddingError(f"{what}: {int(over.sum())} of {len(t)} rows are too large to normalise in float32 "
                                 f"(norm up to {float(norms.max()):.3g}); the model's outputs overflow, its weights are "
                                 "probably corrupt")
    return z


def unit_rows(z: torch.Tensor) -> torch.Tensor:
    """Rows of ``z`` ``[N, D]`` scaled to unit L2 norm, float32, also where plain ``F.normalize`` fails.

    Rows whose squared norm would overflow float32 (largest value near 1e19) or whose norm is at or below
    normalize's epsilon (largest value under 1e-6) are first divided by their largest absolute value, which
    keeps their direction; other rows are normalised exactly as ``F.normalize`` does. Zero rows stay zero;
    NaN stays NaN (:func:`check_embeddings` refuses it).
    """
    if not z.is_floating_point():
        z = z.float()
    if z.numel() == 0:
        return F.normalize(z.float(), dim=1)
    peak = z.abs().amax(dim=1, keepdim=True)
    rescale = (peak >= FLOAT32_NORM_LIMIT / (2 * math.sqrt(z.shape[1]))) | ((peak > 0) & (peak < 1e-6))
    if bool(rescale.any()):
        z = z / torch.where(rescale, peak, torch.ones_like(peak))
    return F.normalize(z.float(), dim=1)


@torch.inference_mode()
def embed_dataset(
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Apply ``embed_fn`` to uint8 images ``[N, C, H, W]`` in batches; returns float32 ``[N, D]`` on the CPU.

    The values are returned as computed: callers that show or store them pass them through
    :func:`check_embeddings` (NaN / overflow -> :class:`EmbeddingError`). Each row depends on its image only
    (the model in eval mode), so under ``torchrun`` a rank passes just its slice ``images[shard_rows(...)]``
    (a view: of a folder's memory-mapped store, only those rows are read) and :func:`gather_rows` joins them.
    """
    out = []
    n = len(images)
    for start in range(0, n, batch_size):
        batch = images[start:start + batch_size].to(device, non_blocking=True).float().div_(255.0)
        out.append(embed_fn(batch).float())  # stays on the device: one transfer at the end, no sync per batch
        if progress is not None:
            progress(min(1.0, (start + batch_size) / max(n, 1)))
    return torch.cat(out).cpu() if out else torch.empty(0, 0)


def shard_rows(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s rows of ``n`` split among ``world`` processes: one contiguous slice, in rank order.

    The boundaries are ``np.array_split``'s: the first ``n % world`` ranks get ``n // world + 1`` rows, the
    others ``n // world`` (sizes differ by at most one; a rank may get none when ``n < world``). Concatenating
    the slices of ranks ``0 .. world - 1`` gives ``range(n)`` in order.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    base, extra = divmod(int(n), int(world))
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def gather_rows(local: torch.Tensor, dst: int = 0) -> torch.Tensor | None:
    """Every rank's rows ``local`` ``[n_r, D]`` concatenated in rank order on rank ``dst`` (None on the others).

    A collective: every rank of the open process group must call it. The slices travel as float32 NumPy
    arrays through ``torch.distributed.gather_object`` (gloo, or NCCL with each rank on its own GPU), so
    they may differ in length; an empty slice (a rank given no rows) is left out. With
    :func:`shard_rows`' slices, the result is row for row what one process embedding all rows would return.
    """
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    parts = [None] * world if rank == dst else None
    dist.gather_object(local.cpu().numpy(), parts, dst=dst)
    if rank != dst:
        return None
    parts = [p for p in parts if len(p)]
    return torch.from_numpy(np.concatenate(parts)) if parts else torch.empty(0, 0)


def _knn_chunks(train_features, train_labels, query_features, num_classes: int, k: int, temperature: float,
                chunk: int, stable: bool):
    """``(start, votes [q, num_classes])`` for each chunk of queries; memory bounded by :data:`KNN_MAX_ELEMENTS`."""
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    if len(train_features) == 0:
        raise ValueError("the kNN bank is empty")
    labels = torch.as_tensor(train_labels).long().to(train_features.device)
    if len(labels) != len(train_features):
        raise ValueError(f"{len(train_features)} bank features but {len(labels)} labels")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"bank labels must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    bank = unit_rows(train_features)
    k = min(int(k), len(bank))
    chunk = max(1, min(int(chunk), KNN_MAX_ELEMENTS // max(len(bank), num_classes, 1)))
    for start in range(0, len(query_features), chunk):
        q = unit_rows(query_features[start:start + chunk].to(bank.device))
        sim, idx = (q @ bank.T).topk(k, dim=1)                    # [q, k], best first
        if stable:
            sim = sim - sim[:, :1]                                # votes scaled by exp(-best / T): same argmax, no overflow
        weights = (sim / temperature).exp()                       # [q, k]
        votes = torch.zeros(len(q), num_classes, dtype=weights.dtype, device=weights.device)
        yield start, votes.scatter_add_(1, labels[idx], weights)  # [q, C]: no [q, k, C] one-hot


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    chunk: int = 1024,
    stable: bool = False,
) -> torch.Tensor:
    """Weighted kNN class scores ``[Q, num_classes]`` (InstDisc, Wu et al. 2018, sec. 3.4).

    ``score[q, c] = sum_{i in top-k(q), y_i = c} exp(s_qi / T)`` with ``s`` the cosine similarity.
    Queries are scored in chunks holding at most :data:`KNN_MAX_ELEMENTS` floats of similarities and votes
    each, whatever the number of classes (votes are scattered into ``[chunk, C]``, never a one-hot
    ``[chunk, k, C]``).

    Args:
        train_features: ``[N, D]`` (normalised inside).
        train_labels: ``[N]`` int64 in ``[0, num_classes)``.
        query_features: ``[Q, D]``.
        stable: subtract each query's best similarity first: scores scaled by ``exp(-s_max / T)`` per
            query, the same argmax, and no float32 overflow when ``T`` is small (``exp(1 / T)`` overflows
            for ``T`` < 0.0113).

    Raises ValueError for ``k < 1``, a temperature that is not a positive number, an empty bank, or labels
    outside ``[0, num_classes)``.
    """
    scores = [votes for _, votes in _knn_chunks(train_features, train_labels, query_features, num_classes, k, temperature, chunk, stable)]
    return torch.cat(scores) if scores else torch.empty(0, num_classes)


def _knn_classes(train_features, train_labels, test_features, num_classes: int, k: int, temperature: float) -> torch.Tensor:
    """Predicted class ``[Q]`` of each query (argmax of the stable votes, chunk by chunk: no ``[Q, C]`` kept)."""
    preds = [votes.argmax(dim=1).cpu() for _, votes in _knn_chunks(train_features, train_labels, test_features, num_classes,
                                                                     k, temperature, 1024, stable=True)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
) -> float:
    """Top-1 accuracy of the weighted kNN classifier on labelled test features (see :func:`knn_predict`)."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = _knn_classes(train_features, train_labels, test_features, num_classes, k, temperature)
    return float((pred == test_labels.long().cpu()).float().mean())


def pixel_knn_accuracy(train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor, test_labels: torch.Tensor,
                       k: int = KNN_K, temperature: float = KNN_TEMPERATURE) -> float:
    """:func:`knn_accuracy` on raw pixels: uint8 images ``[N, C, H, W]`` flattened to ``[N, C*H*W]`` in [0, 1], the
    same weighted kNN and cosine similarity as for embeddings; the floor a representation must beat to have learned
    anything (on Fashion-MNIST's full protocol 0.79)."""
    flat = lambda x: x.reshape(len(x), -1).float().div(255.0)  # noqa: E731
    return knn_accuracy(flat(train_images), train_labels, flat(test_images), test_labels, k, temperature)


def per_class_knn_accuracy(train_features, train_labels, test_features, test_labels, k=KNN_K, temperature=KNN_TEMPERATURE) -> np.ndarray:
    """kNN top-1 accuracy of each class ``[C]`` (NaN for classes absent from the test set)."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = _knn_classes(train_features, train_labels, test_features, num_classes, k, temperature)
    test_labels = torch.as_tensor(test_labels).cpu()
    acc = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = test_labels == c
        if mask.any():
            acc[c] = float((pred[mask] == c).float().mean())
    return acc


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> float:
    """Top-1 test accuracy of a linear classifier on frozen, standardised features.

    Full-batch Adam on the cross-entropy of ``W x + b`` (features standardised with
    the training mean/std), the usual frozen-feature protocol at small scale.
    """
    gen = torch.Generator().manual_seed(seed)
    mean, std = train_features.mean(0, keepdim=True), train_features.std(0, keepdim=True).clamp_min(1e-6)
    xtr, xte = (train_features - mean) / std, (test_features - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    layer = torch.nn.Linear(xtr.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.normal_(0, 0.01, generator=gen)
        layer.bias.zero_()
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            F.cross_entropy(layer(xtr), train_labels.long()).backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return float((layer(xte).argmax(1) == test_labels.long()).float().mean())


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> float:
    """Wang & Isola (2020) alignment: ``E ||f(x) - f(x+)||_2^alpha`` over positive pairs ``[N, D]``."""
    z1, z2 = unit_rows(z1), unit_rows(z2)
    return float((z1 - z2).norm(dim=1).pow(alpha).mean())


def uniformity(z: torch.Tensor, t: float = 2.0, max_points: int = 5000) -> float:
    """Wang & Isola (2020) uniformity: ``log E_{x != y} exp(-t ||f(x) - f(y)||_2^2)`` on ``[N, D]``."""
    z = unit_rows(z[:max_points])
    sq = torch.pdist(z, p=2).pow(2)
    return float(sq.mul(-t).exp().mean().log())


def per_class_uniformity(z: torch.Tensor, labels: torch.Tensor, t: float = 2.0) -> np.ndarray:
    """Uniformity of each class's features ``[C]`` (NaN for classes with < 2 points)."""
    num_classes = int(labels.max()) + 1
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        zc = z[labels == c]
        if len(zc) >= 2:
            out[c] = uniformity(zc, t)
    return out


def recall_at_k(features: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Share of items whose top-k cosine neighbours (self excluded) contain their class.

    Rows are scored in chunks of at most :data:`KNN_MAX_ELEMENTS` similarities (never the whole ``[N, N]``).
    """
    z = unit_rows(features)
    labels = torch.as_tensor(labels).to(z.device)
    k = min(k, len(z) - 1)
    chunk = max(1, KNN_MAX_ELEMENTS // max(len(z), 1))
    hits = 0
    for start in range(0, len(z), chunk):
        sim = z[start:start + chunk] @ z.T                                        # [c, N]
        rows = torch.arange(len(sim), device=z.device)
        sim[rows, rows + start] = -float("inf")                                   # self excluded
        idx = sim.topk(k, dim=1).indices
        hits += int((labels[idx] == labels[start:start + chunk].unsqueeze(1)).any(dim=1).sum())
    return hits / max(len(z), 1)


def evaluate_model(model, train_ds, test_ds, representation: str = "backbone", k: int = KNN_K, temperature: float = KNN_TEMPERATURE,
                   device: str = "auto", augment: str = "simclr", linear: bool = True, geometry: str = "test") -> dict:
    """The full protocol for a :class:`~ssl_viz.checkpoint.LoadedModel` on a labelled dataset.

    Returns ``{"knn_top1", "linear_top1", "alignment", "uniformity", "n_train", "n_test", "geometry"}``;
    kNN and linear accuracy are always held out (train -> test). ``geometry`` says which images alignment and
    uniformity describe: ``"test"`` (uniformity over the test embeddings, alignment on two augmented views
    (``augment`` policy) of up to 1000 test images) or ``"all"`` (train + test: uniformity over every embedding,
    alignment on up to 1000 images of each split).

    Raises :class:`EmbeddingError` when the model's embeddings are not finite or overflow float32
    (:func:`check_embeddings`), ValueError for ``k < 1`` or a temperature that is not positive.
    """
    from ssl_viz.augment import MultiViewAugment, parse_policy
    from ssl_viz.device import pick_device

    dev = pick_device(device)
    for module in (model.encoder, model.projector):
        if module is not None:
            module.to(dev).eval()
    fn = model.embed_fn(representation)
    what = f"{model.name}'s {representation} embeddings of {getattr(train_ds, 'name', 'the dataset')}"
    train_f = check_embeddings(embed_dataset(fn, train_ds.images, device=dev), what + " [train]")
    test_f = check_embeddings(embed_dataset(fn, test_ds.images, device=dev), what + " [test]")
    if geometry not in ("test", "all"):
        raise ValueError(f"geometry must be 'test' or 'all', got {geometry!r}")
    views = MultiViewAugment(parse_policy(augment), n_views=2)
    x = test_ds.float_images(slice(0, 1000))
    if geometry == "all":
        x = torch.cat([train_ds.float_images(slice(0, 1000)), x])
    x = x.to(dev)
    with torch.inference_mode():
        v1, v2 = views(x, generator=torch.Generator(device=dev if dev.type == "cuda" else "cpu").manual_seed(0))
        z1, z2 = (torch.cat([fn(v[i:i + 256]).float().cpu() for i in range(0, len(v), 256)]) for v in (v1, v2))
    check_embeddings(torch.cat([z1, z2]), what + " [augmented test views]")
    every = torch.cat([train_f, test_f]) if geometry == "all" else test_f
    if geometry == "all" and len(every) > 5000:  # uniformity reads 5000 points: a seeded sample of both splits
        every = every[torch.randperm(len(every), generator=torch.Generator().manual_seed(0))[:5000]]
    spread = uniformity(every)
    result = {"n_train": len(train_ds), "n_test": len(test_ds), "alignment": alignment(z1, z2), "uniformity": spread, "geometry": geometry}
    if train_ds.has_labels and test_ds.has_labels:
        result["knn_top1"] = knn_accuracy(train_f, train_ds.labels, test_f, test_ds.labels, k, temperature)
        if linear:
            result["linear_top1"] = linear_probe(train_f, train_ds.labels, test_f, test_ds.labels)
    return result
