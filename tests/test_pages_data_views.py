"""AppTests of the data views: Pairs & negatives, Embeddings, Retrieval (tiny untrained model, digits)."""

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from ssl_viz.ui.plots import projection_scatter, selected_positions, similarity_heatmap, softmax_bars


def run(page: str) -> AppTest:
    at = AppTest.from_file(f"../pages/{page}.py", default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def captions(at: AppTest) -> str:
    return " ".join(img.caption for el in at.get("image") for img in el.proto.imgs)


def test_pairs_page(app_env):
    at = run("pairs")
    assert at.title[0].value == "Pairs & negatives"
    assert len(charts(at)) >= 2  # similarity heatmap + softmax bars
    at.slider(key="pairs_n").set_value(4)
    at.slider(key="pairs_tau").set_value(0.1)
    at.run()
    assert not at.exception
    at.selectbox(key="pairs_policy").set_value("custom")
    at.run()
    at.text_input(key="pairs_spec").input("simclr+rotate90_p=1.0").run()
    assert not at.exception and len(charts(at)) >= 2
    at.text_input(key="pairs_spec").input("nonsense+x=1").run()
    assert not at.exception and at.error  # a bad spec is an error message, not a traceback


def test_embeddings_page(app_env):
    at = AppTest.from_file("../pages/embeddings.py", default_timeout=120)
    at.session_state["emb_method"] = "PCA"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Embeddings"
    assert len(charts(at)) == 1
    at.selectbox(key="emb_color").set_value("k-means cluster").run()
    assert not at.exception and len(charts(at)) == 1
    assert any("Alignment" in m.label for m in at.metric) and any("kNN" in m.label for m in at.metric)
    at.radio(key="emb_dims").set_value(3).run()
    assert not at.exception and len(charts(at)) == 1
    at.radio(key="emb_dims").set_value(2)
    at.selectbox(key="emb_color").set_value("label")
    at.selectbox(key="emb_method").set_value("t-SNE").run()
    assert not at.exception and len(charts(at)) == 1
    at.toggle(key="emb_thumbs").set_value(True).run()  # image map: thumbnails drawn on the 2-D projection
    assert not at.exception and len(charts(at)) == 1
    placed = json.loads(charts(at)[0].proto.spec)["layout"]["images"]
    assert len(placed) == min(200, 449) and all(im["source"].startswith("data:image/png;base64,") for im in placed)


def test_retrieval_page(app_env):
    at = run("retrieval")
    assert at.title[0].value == "Retrieval"
    assert len(charts(at)) >= 1  # per-class precision bars
    at.slider(key="ret_k").set_value(5)
    at.number_input(key="ret_query").set_value(3)
    at.run()
    assert not at.exception
    assert any("precision@5" in m.label for m in at.metric) and "left out" in captions(at)
    # a query outside a smaller bank is embedded on the fly
    from ssl_viz.ui.loaders import sample_indices

    at.select_slider(key="ret_n").set_value(250).run()
    outside = sorted(set(range(449)) - set(sample_indices(449, 250).tolist()))[0]
    at.number_input(key="ret_query").set_value(outside).run()
    assert not at.exception and "left out" not in captions(at) and "query" in captions(at)


@pytest.mark.parametrize("dataset", ["shapes", "photos"])  # colour + factors; 16 unlabelled photos
@pytest.mark.parametrize("page", ["pairs", "embeddings", "retrieval"])
def test_pages_on_other_datasets(app_env, page, dataset):
    at = AppTest.from_file(f"../pages/{page}.py", default_timeout=120)
    at.session_state["ws_dataset"] = dataset
    at.session_state["emb_method"] = "PCA"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    if page == "embeddings" and dataset == "shapes":
        at.selectbox(key="emb_color").set_value("color").run()
        assert not at.exception and len(charts(at)) == 1


def test_plot_builders():
    rng = np.random.default_rng(0)
    fig = projection_scatter(rng.normal(size=(50, 2)), rng.integers(0, 3, 50), ["a", "b", "c"])
    assert len(fig.data) == 3 and fig.data[0].type == "scattergl"
    assert sorted(np.concatenate([t.customdata for t in fig.data]).tolist()) == list(range(50))
    assert projection_scatter(rng.normal(size=(20, 3)), rng.normal(size=20), categorical=False).data[0].type == "scatter3d"
    sel = {"selection": {"points": [{"customdata": 4}, {"customdata": [7]}, {"customdata": 4}]}}
    assert selected_positions(sel).tolist() == [4, 7] and len(selected_positions(None)) == 0
    sim = np.eye(4)
    heat = similarity_heatmap(sim, np.array([2, 3, 0, 1]), ["1a", "2a", "1b", "2b"], anchor=0)
    assert heat.data[0].type == "heatmap" and list(heat.data[1].x) == ["1b", "2b", "1a", "2a"]
    bars = softmax_bars(np.array([0, 0.7, 0.2, 0.1]), anchor=0, positive=2, labels=["1a", "2a", "1b", "2b"])
    assert list(bars.data[0].x) == ["2a", "1b", "2b"]


@pytest.mark.parametrize("page", ["pairs", "embeddings", "retrieval"])
def test_pages_are_thin(page):
    from pathlib import Path

    lines = (Path(__file__).parent.parent / "pages" / f"{page}.py").read_text().splitlines()
    assert len(lines) <= 90 and not any("import torch.nn" in line for line in lines)
