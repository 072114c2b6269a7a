"""The embedding explorer: its computations against naive formulas, and the Embeddings page's controls (AppTest)."""

import io
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from ssl_viz.analysis.explorer import (
    ExplorerError,
    check_explorable,
    class_counts,
    cosine_neighbours,
    count_text,
    embeddings_npz,
    neighbour_placement,
    procrustes_align,
    query_neighbours,
    selection_table,
)


def test_cosine_neighbours_match_the_naive_formula():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(40, 6)).astype(np.float32)
    rows, sims = cosine_neighbours(Z, focus=7, k=5)
    naive = [(float(Z[7] @ Z[j] / np.linalg.norm(Z[7]) / np.linalg.norm(Z[j])), j) for j in range(40) if j != 7]
    naive.sort(key=lambda t: (-t[0], t[1]))
    assert rows.tolist() == [j for _, j in naive[:5]] and 7 not in rows
    np.testing.assert_allclose(sims, [s for s, _ in naive[:5]], atol=1e-6)
    # a query vector: the focus itself comes first with similarity 1
    rows_q, sims_q = query_neighbours(Z, Z[7] * 3.0, k=3)
    assert rows_q[0] == 7 and abs(sims_q[0] - 1) < 1e-6
    with pytest.raises(IndexError):
        cosine_neighbours(Z, focus=40)


def test_ties_are_broken_by_the_lower_row():
    Z = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], dtype=np.float32)
    assert cosine_neighbours(Z, focus=1, k=2)[0].tolist() == [2, 3]


def test_class_counts_and_their_sentence():
    names = ["T-shirt/top", "Trouser", "Shirt"]
    labels = np.array([2] * 47 + [0] * 12 + [1] + [-1])
    assert class_counts(labels, names) == [("Shirt", 47), ("T-shirt/top", 12), ("Trouser", 1), ("unlabelled", 1)]
    assert count_text(labels, names) == "47 Shirt, 12 T-shirt/top, 1 Trouser, 1 unlabelled"
    assert count_text(labels, names, limit=2) == "47 Shirt, 12 T-shirt/top and 2 in 2 other classes"
    assert count_text(labels[:-1], names, limit=2) == "47 Shirt, 12 T-shirt/top, 1 Trouser"  # one class left over: named


def test_selection_table_and_npz_carry_ids_labels_and_coordinates():
    coords = np.arange(10, dtype=np.float32).reshape(5, 2)
    ids = [f"test:{i}" for i in range(5)]
    table = selection_table(np.array([3, 1]), ids, np.array([0, 1, 0, 1, -1]), ["a", "b"], coords)
    assert table.to_dict("list") == {"index": ["test:3", "test:1"], "label": ["b", "b"], "x": [6.0, 2.0], "y": [7.0, 3.0]}
    blob = embeddings_npz(np.ones((5, 3)), ids, np.arange(5), ["a", "b"], coords, model="m")
    with np.load(io.BytesIO(blob)) as npz:
        assert npz["embeddings"].shape == (5, 3) and npz["ids"].tolist() == ids and str(npz["model"]) == "m"
        np.testing.assert_array_equal(npz["coords"], coords)


def test_procrustes_recovers_a_rotated_scaled_shifted_map():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(100, 2))
    theta = 0.7
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    B = 3.0 * A @ R + np.array([5.0, -2.0])
    B[:, 0] *= -1  # a reflection too
    aligned, disparity = procrustes_align(A, B)
    np.testing.assert_allclose(aligned, A, atol=1e-5)
    assert disparity < 1e-9
    noise = procrustes_align(A, rng.normal(size=(100, 2)))[1]
    assert 0.8 < noise <= 1.0  # unrelated maps: almost nothing explained
    with pytest.raises(ValueError):
        procrustes_align(A, B[:50])


def test_neighbour_placement_is_the_similarity_weighted_mean():
    coords = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(neighbour_placement(coords, np.array([0, 1, 2]), np.array([0.5, 0.5, -0.2])), [1.0, 0.0])
    np.testing.assert_allclose(neighbour_placement(coords, np.array([1, 2]), np.array([0.0, 0.0])), [1.0, 2.0])


@pytest.mark.parametrize("bad, words", [(np.full((10, 4), 0.5), "constant"), (np.where(np.eye(10, 4) > 0, np.nan, 1.0), "NaN")])
def test_unexplorable_embeddings_are_one_sentence(bad, words):
    with pytest.raises(ExplorerError, match=words):
        check_explorable(bad)
    check_explorable(np.random.default_rng(0).normal(size=(10, 4)))


def test_umap_places_a_training_point_where_it_already_is():
    """transform() of a point that was fitted returns its own coordinates (UMAP's transform would re-optimise it and may
    drift by a tenth of the map); other points are placed by UMAP."""
    from ssl_viz.analysis.projection import Projector

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(loc=c, size=(40, 8)) for c in (-3, 0, 3)]).astype(np.float32)
    proj = Projector("umap", n_components=2).fit(X)
    placed = proj.transform(X[[5, 60, 100]])
    np.testing.assert_array_equal(placed, proj.embedding_[[5, 60, 100]])  # exactly its dot, not UMAP's re-optimised guess
    # a new point (not a fitted one) still goes through UMAP's transform: near its cluster, on no fitted dot
    new = (X[60] + 0.05 * rng.normal(size=8)).astype(np.float32)[None]
    (where,) = proj.transform(new)
    spread = np.ptp(proj.embedding_, axis=0).max()
    assert np.linalg.norm(proj.embedding_ - where, axis=1).min() > 0
    assert np.linalg.norm(proj.embedding_[40:80].mean(0) - where) < 0.5 * spread


# ----------------------------------------------------------------------------- the page (AppTest)


def embeddings_page(**state) -> AppTest:
    at = AppTest.from_file("../pages/embeddings.py", default_timeout=180)
    for k, v in {"emb_method": "PCA", **state}.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def vega_spec(at: AppTest) -> dict:
    (chart,) = at.get("vega_lite_chart")
    return json.loads(chart.proto.spec)


def test_map_carries_an_image_per_point_in_its_tooltip(app_env):
    at = embeddings_page()
    spec = vega_spec(at)
    layer = spec["layer"][0]
    assert {"field": "image", "title": "image", "type": "nominal"} in layer["encoding"]["tooltip"]
    assert {p["name"] for p in spec.get("params", []) + layer.get("params", [])} == {"focus", "brush"}
    assert "Click a point" in " ".join(i.value for i in at.info)


def test_click_focuses_a_point_and_shows_its_neighbours(app_env):
    at = embeddings_page(emb_knn=5)
    at.session_state["emb_focus"] = 3
    at.run()
    assert not at.exception
    assert any("its 5 nearest neighbours" in h.value for h in at.subheader)
    spec = vega_spec(at)
    assert len(spec["layer"]) == 3  # points, the neighbours ringed, the focus ringed
    nb_buttons = [b for b in at.button if b.key and b.key.startswith("emb_nb_")]
    assert len(nb_buttons) == 5
    target = nb_buttons[1].help.removeprefix("Focus ")  # the neighbour's id, e.g. "train:12"
    nb_buttons[1].click().run()
    assert not at.exception and any(h.value.startswith(f"Focus {target} · ") for h in at.subheader)  # the focus moved to that neighbour
    at.button(key="emb_clear_focus").click().run()
    assert not at.exception and not any("nearest neighbours" in h.value for h in at.subheader)


def test_a_selection_is_counted_and_downloadable(app_env):
    at = embeddings_page(emb_n=449)  # the test split (the default for digits is all 1,797 images)
    at.session_state["emb_selected"] = list(range(0, 40))
    at.run()
    heading = next(h.value for h in at.subheader if "selected" in h.value)
    assert heading.startswith("40 selected: ")
    from ssl_viz.data import load_dataset
    from ssl_viz.ui.loaders import sample_indices

    ds = load_dataset("digits", "test")
    idx = sample_indices(len(ds), 449)[:40]
    names = [ds.class_names[int(y)] for y in ds.labels[idx]]
    top = max(set(names), key=lambda c: (names.count(c), -ord(c[0])))
    assert f"{names.count(top)} {top}" in heading
    assert [d.label for d in at.get("download_button")][0].startswith("Download the selection (40 rows")


def test_projection_controls_and_webgl_view(app_env):
    at = embeddings_page(emb_method="UMAP", emb_neighbors=5, emb_min_dist=0.5)
    assert at.slider(key="emb_neighbors").value == 5 and at.slider(key="emb_min_dist").value == 0.5
    at.radio(key="emb_view").set_value("WebGL (any size, lasso)").run()
    assert not at.exception and len(at.get("plotly_chart")) == 1
    at.selectbox(key="emb_method").set_value("t-SNE").run()
    assert not at.exception and at.slider(key="emb_perplexity").value == 30.0
    at.radio(key="emb_dims").set_value(3).run()
    assert not at.exception and json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]["type"] == "scatter3d"


def test_whole_dataset_and_two_encoders(app_env, tmp_path):
    """'all' maps train + test (1,797 digits); a second encoder's map is drawn beside, aligned."""
    import shutil

    second = app_env.parent / "tiny-simclr-copy"
    if not second.exists():
        shutil.copytree(app_env, second)
    at = embeddings_page(emb_n=1797)
    assert any("1,797 embeddings" in d.label for d in at.get("download_button"))
    at.selectbox(key="emb_compare").set_value(str(second)).run()
    assert not at.exception and len(at.get("vega_lite_chart")) == 2
    assert "Procrustes disparity" in json.dumps(vega_spec_titles(at))


def vega_spec_titles(at: AppTest) -> list:
    return [json.loads(c.proto.spec).get("title") for c in at.get("vega_lite_chart")]


def png_bytes(value: int = 128) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("method", ["PCA", "t-SNE"])
def test_an_uploaded_image_is_placed_on_the_map(app_env, method):
    at = embeddings_page(emb_method=method)
    at.file_uploader(key="emb_upload").upload("mine.png", png_bytes(), "image/png").run()
    assert not at.exception
    assert any("Your image's nearest neighbours" in h.value for h in at.subheader)
    caption = " ".join(c.value for c in at.caption)
    assert ("own transform" in caption) if method == "PCA" else ("weighted mean of its neighbours" in caption)
    spec = vega_spec(at)
    assert any(layer.get("mark", {}).get("shape") == "diamond" for layer in spec["layer"])  # the query marked on the map


def test_an_upload_that_is_not_an_image_is_one_message(app_env):
    at = embeddings_page()
    at.file_uploader(key="emb_upload").upload("notes.png", b"this is not a picture", "image/png").run()
    assert not at.exception and [e.value for e in at.error] == [
        "notes.png is not an image this app can read (PNG, JPEG, BMP, WebP, GIF or TIFF)."]
    assert len(at.get("vega_lite_chart")) == 1  # the map is still there


@pytest.fixture()
def broken_model(app_env, tmp_path):
    """Copies of the tiny model whose encoder weights are all zero (constant embeddings) or NaN."""
    import shutil

    from safetensors.torch import load_file, save_file

    def make(fill: float):
        run = tmp_path / f"model-{fill}"
        shutil.copytree(app_env, run)
        tensors = load_file(run / "checkpoint.safetensors")
        keep = lambda k: ("running_var" in k or k.endswith(".std")) and fill == 0  # noqa: E731 - zero weights, sane BatchNorm statistics: a constant output
        save_file({k: (v.clone().fill_(fill) if v.is_floating_point() and not keep(k) else v) for k, v in tensors.items()},
                  run / "checkpoint.safetensors")
        return str(run)
    return make


@pytest.mark.parametrize("fill, words", [(0.0, "constant"), (float("nan"), "NaN")])
def test_broken_embeddings_are_one_message(broken_model, fill, words):
    at = AppTest.from_file("../pages/embeddings.py", default_timeout=180)
    at.session_state["ws_model"] = broken_model(fill)
    at.session_state["emb_method"] = "PCA"
    at.run()
    assert not at.exception and len(at.error) == 1 and words in at.error[0].value, [e.value for e in at.error]


def test_fewer_points_than_the_method_needs_is_one_message():
    from ssl_viz.analysis.projection import ProjectionError, Projector

    with pytest.raises(ProjectionError, match="needs at least 4 points"):
        Projector("umap").fit(np.random.default_rng(0).normal(size=(3, 5)))


def test_tsne_perplexity_is_capped_on_few_points():
    """A perplexity chosen for thousands of points must not break a map of a few (scikit-learn needs perplexity < n)."""
    from ssl_viz.analysis.projection import Projector

    X = np.random.default_rng(0).normal(size=(10, 4))
    proj = Projector("tsne", perplexity=30.0, max_iter=250).fit(X)
    assert proj.estimator_.perplexity == 3.0 and np.isfinite(proj.embedding_).all()
