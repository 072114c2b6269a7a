"""The field's evaluation protocols on frozen features.

- :func:`knn_predict` / :func:`knn_accuracy`: weighted kNN (Wu et al. 2018, InstDisc):
  cosine similarity to the k nearest training features, each neighbour votes
  for its class with weight exp(s / T); defaults k=200, T=0.1.
- :func:`linear_probe`: a linear classifier trained on frozen features.
- :func:`alignment` and :func:`uniformity`: Wang & Isola (2020), on L2-normalised
  features, ``align = E ||f(x) - f(x+)||^alpha``, ``unif = log E exp(-t ||f(x) - f(y)||^2)``.
- :func:`recall_at_k`: share of queries with a same-class item among their top-k.
- :func:`embed_dataset`: features of a dataset in batches under ``inference_mode``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

# The weighted kNN protocol of InstDisc (Wu et al. 2018) as used by every figure this project reports.
KNN_K = 200
KNN_TEMPERATURE = 0.1


@torch.inference_mode()
def embed_dataset(
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Apply ``embed_fn`` to uint8 images ``[N, C, H, W]`` in batches; returns float32 ``[N, D]`` on the CPU."""
    out = []
    n = len(images)
    for start in range(0, n, batch_size):
        batch = images[start:start + batch_size].to(device, non_blocking=True).float().div_(255.0)
        out.append(embed_fn(batch).float())  # stays on the device: one transfer at the end, no sync per batch
        if progress is not None:
            progress(min(1.0, (start + batch_size) / max(n, 1)))
    return torch.cat(out).cpu() if out else torch.empty(0, 0)


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    chunk: int = 1024,
) -> torch.Tensor:
    """Weighted kNN class scores ``[Q, num_classes]`` (InstDisc, Wu et al. 2018, sec. 3.4).

    Args:
        train_features: ``[N, D]`` (normalised inside).
        train_labels: ``[N]`` int64 in ``[0, num_classes)``.
        query_features: ``[Q, D]``.
    """
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.long()
    k = min(k, len(bank))
    scores = []
    for start in range(0, len(query_features), chunk):
        q = F.normalize(query_features[start:start + chunk].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)                    # [q, k]
        weights = (sim / temperature).exp()                       # [q, k]
        one_hot = F.one_hot(labels[idx], num_classes).float()     # [q, k, C]
        scores.append((weights.unsqueeze(-1) * one_hot).sum(dim=1))
    return torch.cat(scores) if scores else torch.empty(0, num_classes)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
) -> float:
    """Top-1 accuracy of the weighted kNN classifier on labelled test features."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature).argmax(dim=1)
    return float((pred == test_labels.long()).float().mean())


def per_class_knn_accuracy(train_features, train_labels, test_features, test_labels, k=KNN_K, temperature=KNN_TEMPERATURE) -> np.ndarray:
    """kNN top-1 accuracy of each class ``[C]`` (NaN for classes absent from the test set)."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature).argmax(dim=1)
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
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    return float((z1 - z2).norm(dim=1).pow(alpha).mean())


def uniformity(z: torch.Tensor, t: float = 2.0, max_points: int = 5000) -> float:
    """Wang & Isola (2020) uniformity: ``log E_{x != y} exp(-t ||f(x) - f(y)||_2^2)`` on ``[N, D]``."""
    z = F.normalize(z.float()[:max_points], dim=1)
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
    """Share of items whose top-k cosine neighbours (self excluded) contain their class."""
    z = F.normalize(features.float(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-float("inf"))
    idx = sim.topk(min(k, len(z) - 1), dim=1).indices
    hit = (labels[idx] == labels.unsqueeze(1)).any(dim=1)
    return float(hit.float().mean())


def evaluate_model(model, train_ds, test_ds, representation: str = "backbone", k: int = KNN_K, temperature: float = KNN_TEMPERATURE,
                   device: str = "auto", augment: str = "simclr", linear: bool = True) -> dict:
    """The full protocol for a :class:`~ssl_viz.checkpoint.LoadedModel` on a labelled dataset.

    Returns ``{"knn_top1", "linear_top1", "alignment", "uniformity", "n_train", "n_test"}``;
    alignment is measured on two augmented views (``augment`` policy) of up to 1000 test images.
    """
    from ssl_viz.augment import MultiViewAugment, parse_policy
    from ssl_viz.device import pick_device

    dev = pick_device(device)
    for module in (model.encoder, model.projector):
        if module is not None:
            module.to(dev).eval()
    fn = model.embed_fn(representation)
    train_f = embed_dataset(fn, train_ds.images, device=dev)
    test_f = embed_dataset(fn, test_ds.images, device=dev)
    views = MultiViewAugment(parse_policy(augment), n_views=2)
    x = test_ds.float_images(slice(0, 1000)).to(dev)
    with torch.inference_mode():
        v1, v2 = views(x, generator=torch.Generator(device=dev if dev.type == "cuda" else "cpu").manual_seed(0))
        z1, z2 = fn(v1).float().cpu(), fn(v2).float().cpu()
    result = {"n_train": len(train_ds), "n_test": len(test_ds), "alignment": alignment(z1, z2), "uniformity": uniformity(test_f)}
    if train_ds.has_labels and test_ds.has_labels:
        result["knn_top1"] = knn_accuracy(train_f, train_ds.labels, test_f, test_ds.labels, k, temperature)
        if linear:
            result["linear_top1"] = linear_probe(train_f, train_ds.labels, test_f, test_ds.labels)
    return result
