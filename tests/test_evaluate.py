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


# ---------------------------------------------------------------- issue 15: bounded kNN memory, numbers that are not numbers


def one_hot_knn_predict(train_features, train_labels, query_features, num_classes, k, temperature, chunk=1024):
    """The formula as ssl-viz computed it before: a one-hot ``[chunk, k, C]`` per chunk (5.2 GB at 2,000 classes)."""
    bank = torch.nn.functional.normalize(train_features.float(), dim=1)
    labels = train_labels.long()
    k = min(k, len(bank))
    scores = []
    for start in range(0, len(query_features), chunk):
        q = torch.nn.functional.normalize(query_features[start:start + chunk].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        one_hot = torch.nn.functional.one_hot(labels[idx], num_classes).float()
        scores.append((weights.unsqueeze(-1) * one_hot).sum(dim=1))
    return torch.cat(scores)


def _many_classes(seed=0, n_bank=800, n_query=150, dim=16, classes=3000):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n_bank, dim, generator=gen), torch.randint(0, classes, (n_bank,), generator=gen),
            torch.randn(n_query, dim, generator=gen), torch.randint(0, classes, (n_query,), generator=gen), classes)


def test_knn_without_one_hot_matches_the_old_formula_with_many_classes(monkeypatch):
    bank, labels, queries, qlabels, classes = _many_classes()
    old = one_hot_knn_predict(bank, labels, queries, classes, k=50, temperature=0.1)
    monkeypatch.setattr(torch.nn.functional, "one_hot", lambda *a, **k: pytest.fail("no [q, k, C] one-hot any more"))
    new = knn_predict(bank, labels, queries, classes, k=50, temperature=0.1)
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)
    assert torch.equal(new.argmax(1), old.argmax(1))
    assert knn_accuracy(bank, labels, queries, qlabels, k=50) == float((old.argmax(1) == qlabels).float().mean())
    per_class = per_class_knn_accuracy(bank, labels, queries, qlabels, k=50)
    assert per_class.shape == (int(max(labels.max(), qlabels.max())) + 1,) and np.nanmean(per_class) == pytest.approx(
        np.nanmean([float((old.argmax(1)[qlabels == c] == c).float().mean()) for c in qlabels.unique()]))


def test_knn_memory_per_chunk_is_bounded_whatever_the_classes(monkeypatch):
    import ssl_viz.evaluate as ev

    bank, labels, queries, _, classes = _many_classes(seed=1, classes=2000)
    monkeypatch.setattr(ev, "KNN_MAX_ELEMENTS", 10_000)
    chunks = list(ev._knn_chunks(bank, labels, queries, classes, 20, 0.1, chunk=1024, stable=False))
    assert all(votes.numel() <= 10_000 for _, votes in chunks) and len(chunks) == len(queries) // 5  # 5 queries x 2000 classes
    torch.testing.assert_close(torch.cat([v for _, v in chunks]), one_hot_knn_predict(bank, labels, queries, classes, 20, 0.1),
                               rtol=1e-5, atol=1e-6)


def test_knn_with_a_small_temperature_does_not_overflow():
    """exp(s / T) overflows float32 for T < 0.0113: every vote became inf and class 0 won."""
    q = torch.tensor([[1.0, 0.0]])
    near = torch.tensor([[0.99, (1 - 0.99**2) ** 0.5]])                          # one neighbour of class 1 at cosine 0.99
    others = torch.tensor([[0.95, (1 - 0.95**2) ** 0.5]]).repeat(5, 1)           # five of class 0 at cosine 0.95
    bank, labels = torch.cat([others, near]), torch.tensor([0, 0, 0, 0, 0, 1])
    # e^(0.99 / 0.005) = e^198 > 5 e^190: class 1 wins the weighted vote
    assert knn_accuracy(bank, labels, q, torch.tensor([1]), k=6, temperature=0.005) == 1.0
    assert knn_predict(bank, labels, q, 2, k=6, temperature=0.005, stable=True).argmax(1).item() == 1
    assert not torch.isfinite(one_hot_knn_predict(bank, labels, q, 2, 6, 0.005)).any()  # the old formula: inf * 0 = NaN votes


@pytest.mark.parametrize("k, t, message", [(0, 0.1, "k must be at least 1"), (-3, 0.1, "k must be at least 1"),
                                            (5, 0.0, "temperature"), (5, float("nan"), "temperature"), (5, -1.0, "temperature")])
def test_knn_refuses_numbers_that_mean_nothing(k, t, message):
    bank, labels = torch.randn(10, 4), torch.randint(0, 3, (10,))
    with pytest.raises(ValueError, match=message):
        knn_predict(bank, labels, torch.randn(2, 4), 3, k=k, temperature=t)
    with pytest.raises(ValueError, match="empty"):
        knn_predict(bank[:0], labels[:0], torch.randn(2, 4), 3)


def test_alignment_and_uniformity_of_overflowing_or_tiny_outputs_are_their_true_values():
    from ssl_viz.evaluate import unit_rows

    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(40, 8, generator=gen), torch.randn(40, 8, generator=gen)
    for scale in (1e30, 1e-30):
        assert alignment(z1 * scale, z2 * scale) == pytest.approx(alignment(z1, z2), rel=1e-5)
        assert uniformity(z1 * scale) == pytest.approx(uniformity(z1), rel=1e-5)
        assert recall_at_k(z1 * scale, torch.arange(40) % 3, 3) == recall_at_k(z1, torch.arange(40) % 3, 3)
    assert alignment(z1 * 1e30, z2 * 1e30) > 0.5 and uniformity(z1 * 1e30) < -0.5  # the old code read 0.0 and 0.0
    assert torch.equal(unit_rows(z1), torch.nn.functional.normalize(z1, dim=1))  # ordinary rows: exactly as before
    assert torch.equal(unit_rows(torch.zeros(2, 3)), torch.zeros(2, 3))


def test_check_embeddings_refuses_nan_and_overflow_and_passes_the_rest():
    from ssl_viz.evaluate import EmbeddingError, check_embeddings

    z = torch.randn(6, 4)
    assert check_embeddings(z) is z and check_embeddings(z.numpy() * 1e18) is not None
    bad = z.clone()
    bad[[1, 4], 2] = float("nan")
    with pytest.raises(EmbeddingError, match="model X: 2 of 6 rows are not finite"):
        check_embeddings(bad, "model X")
    bad[1, 2] = float("inf")
    with pytest.raises(EmbeddingError, match="2 of 6 rows are not finite"):
        check_embeddings(bad.numpy())
    with pytest.raises(EmbeddingError, match=r"1 of 6 rows are too large to normalise in float32 \(norm up to 2"):
        check_embeddings(torch.cat([z[:5], torch.full((1, 4), 1e19)]))


def test_pixel_knn_accuracy_matches_the_naive_formula_on_flattened_pixels():
    """Raw pixels' kNN (the live chart's floor): uint8 images flattened to [0, 1] vectors, the same weighted kNN."""
    from ssl_viz.evaluate import pixel_knn_accuracy

    gen = torch.Generator().manual_seed(3)
    bank = torch.randint(0, 256, (50, 1, 4, 4), generator=gen, dtype=torch.uint8)
    queries = torch.randint(0, 256, (12, 1, 4, 4), generator=gen, dtype=torch.uint8)
    bank_labels, query_labels = torch.randint(0, 3, (50,), generator=gen), torch.randint(0, 3, (12,), generator=gen)
    flat = lambda x: x.reshape(len(x), -1).double().numpy() / 255.0  # noqa: E731
    votes = naive_weighted_knn(flat(bank), bank_labels.numpy(), flat(queries), 3, 7, 0.1)
    expected = float((votes.argmax(1) == query_labels.numpy()).mean())
    assert pixel_knn_accuracy(bank, bank_labels, queries, query_labels, k=7, temperature=0.1) == pytest.approx(expected)
