"""Evaluation protocols against naive implementations of their papers' formulas."""

import math

import numpy as np
import pytest
import torch

from ssl_viz.evaluate import alignment, knn_accuracy, knn_predict, linear_probe, per_class_knn_accuracy, recall_at_k, uniformity


def naive_weighted_knn(bank, bank_labels, queries, num_classes, k, t):
    """InstDisc weighted kNN, one query at a time: votes exp(s/t) of the k most similar."""
    preds = []
    for q in queries:
        sims = [float(np.dot(q, b) / (np.linalg.norm(q) * np.linalg.norm(b))) for b in bank]
        order = sorted(range(len(bank)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * num_classes
        for i in order:
            votes[int(bank_labels[i])] += math.exp(sims[i] / t)
        preds.append(votes)
    return np.array(preds)


@pytest.mark.parametrize("k,t", [(1, 0.1), (5, 0.1), (20, 0.5), (200, 0.07)])
def test_knn_matches_naive(k, t):
    gen = torch.Generator().manual_seed(k)
    bank, queries = torch.randn(60, 8, generator=gen, dtype=torch.float64), torch.randn(15, 8, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 4, (60,), generator=gen)
    ours = knn_predict(bank, labels, queries, 4, k=k, temperature=t, chunk=4).numpy()
    naive = naive_weighted_knn(bank.numpy(), labels.numpy(), queries.numpy(), 4, min(k, 60), t)
    np.testing.assert_allclose(ours, naive, rtol=1e-4)


def test_knn_accuracy_separable_and_random():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=gen) * 5
    labels = torch.randint(0, 5, (300,), generator=gen)
    feats = centers[labels] + torch.randn(300, 16, generator=gen)
    assert knn_accuracy(feats[:200], labels[:200], feats[200:], labels[200:], k=20) > 0.95
    noise = torch.randn(300, 16, generator=gen)
    assert knn_accuracy(noise[:200], labels[:200], noise[200:], labels[200:], k=20) < 0.45
    per_class = per_class_knn_accuracy(feats[:200], labels[:200], feats[200:], labels[200:], k=20)
    assert per_class.shape == (5,) and np.nanmin(per_class) > 0.8


def naive_alignment(z1, z2, alpha):
    z1 = [v / np.linalg.norm(v) for v in z1]
    z2 = [v / np.linalg.norm(v) for v in z2]
    return float(np.mean([np.linalg.norm(a - b) ** alpha for a, b in zip(z1, z2)]))


def naive_uniformity(z, t):
    z = [v / np.linalg.norm(v) for v in z]
    vals = [math.exp(-t * np.linalg.norm(z[i] - z[j]) ** 2) for i in range(len(z)) for j in range(i + 1, len(z))]
    return math.log(np.mean(vals))


@pytest.mark.parametrize("n,d,alpha,t", [(5, 3, 2.0, 2.0), (17, 8, 1.0, 1.0), (40, 16, 2.0, 5.0)])
def test_alignment_uniformity_match_naive(n, d, alpha, t):
    gen = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(n, d, generator=gen, dtype=torch.float64), torch.randn(n, d, generator=gen, dtype=torch.float64)
    assert alignment(z1, z2, alpha) == pytest.approx(naive_alignment(z1.numpy(), z2.numpy(), alpha), rel=1e-5)
    assert uniformity(z1, t) == pytest.approx(naive_uniformity(z1.numpy(), t), rel=1e-4, abs=1e-5)


def test_alignment_zero_for_identical_and_uniformity_orders():
    z = torch.randn(50, 8)
    assert alignment(z, z) == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.ones(50, 8) + 1e-3 * torch.randn(50, 8)
    assert uniformity(collapsed) > uniformity(torch.randn(50, 8)) + 1.0  # collapse is far less uniform


def test_linear_probe_learns_linear_classes():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(10, 3, generator=gen)
    x = torch.randn(600, 10, generator=gen)
    y = (x @ w).argmax(1)
    assert linear_probe(x[:400], y[:400], x[400:], y[400:], epochs=200) > 0.9
    assert linear_probe(x[:400], y[torch.randperm(600, generator=gen)][:400], x[400:], y[400:], epochs=50) < 0.6


def test_recall_at_k_matches_naive():
    gen = torch.Generator().manual_seed(3)
    f = torch.randn(30, 4, generator=gen)
    y = torch.randint(0, 3, (30,), generator=gen)
    zn = torch.nn.functional.normalize(f, dim=1)
    for k in (1, 3):
        hits = 0
        for i in range(30):
            sims = [(float(zn[i] @ zn[j]), j) for j in range(30) if j != i]
            top = [j for _, j in sorted(sims, reverse=True)[:k]]
            hits += any(int(y[j]) == int(y[i]) for j in top)
        assert recall_at_k(f, y, k) == pytest.approx(hits / 30)
