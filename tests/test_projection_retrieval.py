"""Projector (PCA / t-SNE / UMAP), cached projections, k-means, Retriever and precision@K against naive versions."""

import numpy as np
import pytest
import torch

from ssl_viz.analysis.projection import Projector, exact_knn, is_projection_cached, kmeans_labels, knn_graph, l2_normalize, project_cached
from ssl_viz.analysis.retrieval import (
    Retriever,
    bank_position,
    per_class_precision,
    precision_at_k,
    prepare_query_image,
    read_query_image,
    worst_queries,
)


def blobs(n_per=30, d=16, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 4
    X = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centers]).astype(np.float32)
    return X, np.repeat(np.arange(k), n_per)


# ----------------------------------------------------------------------------- Projector


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("n_components", [2, 3])
def test_pca_matches_numpy_svd_up_to_sign(normalize, n_components):
    X, _ = blobs()
    proj = Projector("pca", n_components=n_components, normalize=normalize)
    assert proj.fit(X) is proj
    Xp = l2_normalize(X) if normalize else X
    Xc = Xp - Xp.mean(0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    ref = Xc @ vt[:n_components].T
    got = proj.embedding_
    assert got.shape == (len(X), n_components)
    for c in range(n_components):
        sign = np.sign(np.dot(got[:, c], ref[:, c]))
        np.testing.assert_allclose(got[:, c] * sign, ref[:, c], atol=1e-4)
    # transform of the fitted data gives the same map; fit_transform too
    np.testing.assert_allclose(proj.transform(X), got, atol=1e-4)
    np.testing.assert_allclose(Projector("pca", n_components, normalize=normalize).fit_transform(X), got, atol=1e-5)
    assert proj.explained_variance_ratio_.shape == (n_components,)


def test_learned_attributes_end_in_underscore_and_are_set_only_by_fit():
    proj = Projector("pca", n_components=2)
    before = set(vars(proj))
    assert not any(k.endswith("_") for k in before)
    with pytest.raises(RuntimeError, match="not fitted"):
        proj.transform(np.zeros((3, 4)))
    proj.fit(blobs()[0])
    learned = set(vars(proj)) - before
    assert learned and all(k.endswith("_") for k in learned if not k.startswith("_"))
    assert proj.n_features_in_ == 16


def test_bad_arguments_raise_clear_errors():
    X, _ = blobs()
    with pytest.raises(ValueError, match="unknown projection method"):
        Projector("lda").fit(X)
    with pytest.raises(ValueError, match="n_components"):
        Projector("pca", n_components=4).fit(X)
    with pytest.raises(ValueError, match="at least"):
        Projector("tsne").fit(X[:3])


def test_tsne_runs_and_has_no_out_of_sample_transform():
    X, y = blobs(n_per=20)
    proj = Projector("tsne", n_components=2, max_iter=250)
    emb = proj.fit_transform(X)
    assert emb.shape == (60, 2) and np.isfinite(emb).all()
    with pytest.raises(NotImplementedError, match="t-SNE"):
        proj.transform(X)


def test_umap_runs_on_tiny_data_and_transforms_new_points():
    """The one UMAP test (numba compiles on the first call in a process)."""
    X, y = blobs(n_per=25)
    proj = Projector("umap", n_components=2, n_epochs=50)
    emb = proj.fit_transform(X)
    assert emb.shape == (75, 2) and np.isfinite(emb).all()
    new = proj.transform(X[:5] + 0.01)
    assert new.shape == (5, 2) and np.isfinite(new).all()
    # clusters stay apart: each point's nearest map neighbour shares its blob
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).mean() > 0.9


def test_exact_knn_graph_for_umap_matches_brute_force():
    X = l2_normalize(blobs()[0])
    idx, dist = exact_knn(X, 5)
    d = np.sqrt(((X[:, None].astype(np.float64) - X[None]) ** 2).sum(-1))
    ref = np.argsort(d, axis=1, kind="stable")[:, :5]
    assert (idx[:, 0] == np.arange(len(X))).all() and (dist[:, 0] == 0).all()
    np.testing.assert_allclose(dist, np.take_along_axis(d, ref, 1), atol=1e-3)
    assert idx.dtype == np.int64 and dist.dtype == np.float32


def test_low_precision_knn_graph_finds_the_exact_neighbours_at_exact_distances():
    """bfloat16 candidates re-ranked in float32 (the graph of large maps): nearly every exact neighbour found,
    each at its exact float32 distance, itself first; a candidate pool too small to hold the neighbours loses them."""
    rng = np.random.default_rng(0)
    X = l2_normalize(rng.normal(size=(600, 32)) + 3 * rng.normal(size=(6, 32))[rng.integers(0, 6, 600)])
    ref_idx, ref_dist = exact_knn(X, 10)
    idx, dist = knn_graph(X, 10, candidates=40, chunk_size=128, low_precision=True)
    assert idx.shape == (600, 10) and idx.dtype == np.int64 and dist.dtype == np.float32
    assert (idx[:, 0] == np.arange(600)).all() and (dist[:, 0] == 0).all()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, ref_idx)])
    assert recall > 0.97, recall
    true = np.sqrt(((X[:, None].astype(np.float64) - X[idx]) ** 2).sum(-1))  # the distance of each found neighbour
    np.testing.assert_allclose(dist, true, atol=1e-3)
    assert (np.diff(dist, axis=1) >= -1e-6).all()  # nearest first
    small = knn_graph(X, 10, candidates=10, low_precision=True)[0]  # no room to re-rank: bfloat16's ties decide
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(small, ref_idx)]) < recall
    np.testing.assert_array_equal(knn_graph(X, 10, low_precision=False)[0], ref_idx)  # small maps: the exact graph


def test_project_cached_reads_from_disk_the_second_time(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_VIZ_CACHE", str(tmp_path))
    X, _ = blobs()
    key = {"model": "m", "dataset": "d"}
    assert not is_projection_cached(X, key, "pca", 2)
    first = project_cached(X, key, "pca", 2)
    assert is_projection_cached(X, key, "pca", 2)
    assert len(list((tmp_path / "projections").glob("*.npz"))) == 1
    np.testing.assert_array_equal(project_cached(X, key, "pca", 2), first)
    # other data under the same key is a different entry, never the stale map
    project_cached(X * 2 + 1, key, "pca", 2)
    assert len(list((tmp_path / "projections").glob("*.npz"))) == 2


def test_kmeans_labels_recover_blobs():
    X, y = blobs()
    labels = kmeans_labels(X, 3)
    assert labels.shape == (90,) and labels.dtype == np.int64
    # same partition up to renaming
    for c in range(3):
        assert len(np.unique(labels[y == c])) == 1


# ----------------------------------------------------------------------------- Retriever


def naive_knn(bank, q, k, metric, exclude=None):
    bank, q = np.asarray(bank, np.float64), np.asarray(q, np.float64)
    if metric == "cosine":
        b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
        s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ b.T
    elif metric == "dot":
        s = q @ bank.T
    else:
        s = -np.sqrt(((q[:, None] - bank[None]) ** 2).sum(-1))
    if exclude is not None:
        s[np.arange(len(q)), exclude] = -np.inf
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, 1), idx


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
@pytest.mark.parametrize("chunk", [3, 1024])
def test_retriever_matches_brute_force(metric, chunk):
    rng = np.random.default_rng(1)
    bank, q = rng.normal(size=(200, 12)).astype(np.float32), rng.normal(size=(17, 12)).astype(np.float32)
    r = Retriever(k=7, metric=metric, chunk_size=chunk)
    assert r.fit(bank) is r and r.bank_.shape == (200, 12) and isinstance(r.bank_, torch.Tensor)
    scores, idx = r.query(q)
    ref_s, ref_i = naive_knn(bank, q, 7, metric)
    assert scores.shape == idx.shape == (17, 7)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(scores, ref_s, atol=1e-4)


def test_retriever_excludes_the_query_itself():
    rng = np.random.default_rng(2)
    bank = rng.normal(size=(50, 8)).astype(np.float32)
    r = Retriever(k=5).fit(bank)
    _, with_self = r.query(bank[:10])
    assert (with_self[:, 0] == np.arange(10)).all()
    scores, idx = r.query(bank[:10], exclude=np.arange(10))
    assert not (idx == np.arange(10)[:, None]).any()
    ref_s, ref_i = naive_knn(bank, bank[:10], 5, "cosine", exclude=np.arange(10))
    np.testing.assert_array_equal(idx, ref_i)
    # -1 excludes nothing; k is capped at the bank size
    _, idx = r.query(bank[:2], exclude=[-1, 1])
    assert idx[0, 0] == 0 and 1 not in idx[1]
    assert Retriever(k=100).fit(bank[:6]).query(bank[:1], exclude=[0])[1].shape == (1, 5)


def test_precision_at_k_and_tables_match_naive():
    rng = np.random.default_rng(3)
    nl, ql = rng.integers(0, 4, size=(40, 6)), rng.integers(0, 4, size=40)
    prec = precision_at_k(nl, ql)
    naive = np.array([sum(int(a == ql[i]) for a in nl[i]) / 6 for i in range(40)])
    np.testing.assert_allclose(prec, naive)
    table = per_class_precision(nl, ql, class_names=["a", "b", "c", "d"])
    assert list(table.columns) == ["class", "name", "queries", "precision"]
    for _, row in table.iterrows():
        np.testing.assert_allclose(row["precision"], naive[ql == row["class"]].mean())
    assert table["queries"].sum() == 40 and table["name"].tolist() == ["a", "b", "c", "d"][: len(table)]
    worst = worst_queries(nl, ql, n=5)
    assert len(worst) == 5 and (np.diff(worst["precision"]) >= 0).all()
    assert worst["precision"].iloc[0] == naive.min()
    i = int(worst["query"].iloc[0])
    assert worst["majority"].iloc[0] == np.bincount(nl[i]).argmax()


def test_prepare_query_image_matches_dataset_format():
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, size=(40, 60, 3), dtype=np.uint8))
    gray = prepare_query_image(img, 1, (8, 8))
    assert gray.shape == (1, 1, 8, 8) and gray.dtype == torch.uint8
    rgb = prepare_query_image(img.convert("L"), 3, (28, 32))
    assert rgb.shape == (1, 3, 28, 32)


def test_read_query_image_decodes_files_and_names_junk():
    import io

    from PIL import Image

    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, size=(30, 20, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    buf.seek(0)
    torch.testing.assert_close(read_query_image(buf, 1, (8, 8)), prepare_query_image(img, 1, (8, 8)))
    with pytest.raises(ValueError, match="cannot identify image file"):
        read_query_image(io.BytesIO(b"not an image at all"), 3, (8, 8))


def test_bank_position_finds_a_query_in_a_sorted_bank():
    bank = np.array([2, 5, 9, 14])
    assert [bank_position(bank, i) for i in (2, 9, 14)] == [0, 2, 3]
    assert bank_position(bank, 3) is None and bank_position(bank, 20) is None and bank_position(bank[:0], 1) is None


def test_thumbnails_are_placed_at_their_points():
    from ssl_viz.ui.plots import add_thumbnails, projection_scatter

    coords = np.array([[0.0, 0.0], [10.0, 5.0], [3.0, -2.0]])
    images = [np.full((8, 8, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    fig = add_thumbnails(projection_scatter(coords, np.array([0, 1, 0]), ["a", "b"]), coords, images)
    placed = fig.layout.images
    assert len(placed) == 3
    assert [(im.x, im.y) for im in placed] == [(0.0, 0.0), (10.0, 5.0), (3.0, -2.0)]
    assert all(im.source.startswith("data:image/png;base64,") and im.sizex == pytest.approx(0.35) for im in placed)


@pytest.mark.parametrize("method", ["umap", "tsne", "pca"])
def test_collapsed_or_non_finite_embeddings_are_one_clear_error_never_a_nan_map(method):
    """A constant embedding once gave UMAP an all-NaN map and t-SNE a segfault; NaN / inf rows a bare sklearn message."""
    from ssl_viz.analysis.projection import ProjectionError

    with pytest.raises(ProjectionError, match="same vector"):
        Projector(method).fit(np.ones((50, 16), np.float32))
    X = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    X[3, 2], X[7, 0] = np.nan, np.inf
    with pytest.raises(ProjectionError, match=r"2 of 50 embeddings hold NaN or infinite values \(rows 3, 7\)"):
        Projector(method).fit(X)
