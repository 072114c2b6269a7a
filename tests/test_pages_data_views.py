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
    assert len(at.get("vega_lite_chart")) == 1  # images on hover (up to 10,000 points)
    at.selectbox(key="emb_color").set_value("k-means cluster").run()
    assert not at.exception and len(at.get("vega_lite_chart")) == 1
    assert any("Alignment" in m.label for m in at.metric) and any("kNN" in m.label for m in at.metric)
    at.radio(key="emb_dims").set_value(3).run()
    assert not at.exception and len(charts(at)) == 1 and not at.get("vega_lite_chart")  # 3-D: plotly
    at.radio(key="emb_dims").set_value(2)
    at.selectbox(key="emb_color").set_value("label")
    at.selectbox(key="emb_method").set_value("t-SNE").run()
    assert not at.exception and len(at.get("vega_lite_chart")) == 1
    at.toggle(key="emb_thumbs").set_value(True).run()  # image map: 200 images drawn on the 2-D projection
    assert not at.exception
    layers = json.loads(at.get("vega_lite_chart")[0].proto.spec)["layer"]
    assert any(layer["mark"]["type"] == "image" for layer in layers)
    at.radio(key="emb_view").set_value("WebGL (any size, lasso)").run()
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


def test_retrieval_searches_every_image_of_a_large_bank(app_env, monkeypatch):
    """Past the largest sample size the bank can be every image ("all N"); the per-class figures then use a seeded draw
    of MAX_PRECISION_QUERIES bank images as queries and say so (digits' 449 test images stand in for 100,000)."""
    import ssl_viz.ui.data_views as dv

    monkeypatch.setattr(dv, "SAMPLE_SIZES", (100, 250))
    monkeypatch.setattr(dv, "MAX_PRECISION_QUERIES", 120)
    at = run("retrieval")
    slider = at.select_slider(key="ret_n")
    assert 449 in slider.options or "all 449" in slider.options
    slider.set_value(449).run()
    assert not at.exception
    heads = [h.value for h in at.subheader]
    assert any("120 of the 449 bank images as queries" in h for h in heads), heads
    assert len(charts(at)) >= 1


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
        assert not at.exception and len(at.get("vega_lite_chart")) == 1


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


@pytest.mark.parametrize("page", ["pairs", "negatives", "embeddings", "retrieval"])
def test_pages_are_thin(page):
    from pathlib import Path

    lines = (Path(__file__).parent.parent / "pages" / f"{page}.py").read_text().splitlines()
    assert len(lines) <= 80 and not any("import torch.nn" in line for line in lines)


# ----------------------------------------------------------------------------- the library behind the pages


def test_sampled_contrastive_batch_is_the_seeded_batch_of_contrastive_batch():
    import math

    import torch

    from ssl_viz.analysis.pairs import contrastive_batch, random_batch, sampled_contrastive_batch
    from ssl_viz.augment import POLICIES, BatchAugment

    images = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8)
    embed = lambda x: x.flatten(1)  # noqa: E731
    pick, cb = sampled_contrastive_batch(embed, images, 6, POLICIES["simclr"], temperature=0.2, seed=7)
    assert pick.tolist() == torch.randperm(30, generator=torch.Generator().manual_seed(7))[:6].tolist() == random_batch(30, 6, 7).tolist()
    ref = contrastive_batch(embed, images[pick], BatchAugment(POLICIES["simclr"]), temperature=0.2, seed=7)
    assert torch.equal(cb.views, ref.views) and torch.equal(cb.losses, ref.losses)
    assert cb.chance_loss == math.log(11) and len(random_batch(4, 10)) == 4


def test_embedding_metrics_match_the_evaluate_functions():
    import torch

    from ssl_viz.analysis.embedding_metrics import embedding_metrics
    from ssl_viz.analysis.pairs import view_alignment
    from ssl_viz.augment import POLICIES, BatchAugment
    from ssl_viz.evaluate import knn_accuracy, uniformity

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    z = torch.eye(3)[labels] * 3 + torch.randn(60, 3, generator=g)
    images = torch.rand(300, 1, 8, 8, generator=g)
    idx = np.arange(0, 300, 5)
    embed = lambda x: x.flatten(1)[:, :3]  # noqa: E731
    m = embedding_metrics(z.numpy(), labels.numpy(), embed, images, idx)
    assert m.knn_top1 == knn_accuracy(z[0::2], labels[0::2], z[1::2], labels[1::2], k=30) and m.knn_top1 > 0.8
    assert m.uniformity == uniformity(z, max_points=2000)
    assert m.alignment == view_alignment(embed, images[idx], BatchAugment(POLICIES["simclr"]))
    bare = embedding_metrics(z)
    assert bare.knn_top1 is None and bare.alignment is None and bare.uniformity == m.uniformity


def test_sample_size_picker_offers_sizes_below_the_data():
    from ssl_viz.ui.data_views import sample_size_picker

    class Column:
        def select_slider(self, label, options, value, key, format_func):
            self.seen = (label, options, value, key, [format_func(o) for o in options])
            return value

    col = Column()
    assert sample_size_picker(col, "Points", 449, key="k") == 449 and col.seen[:4] == ("Points", [250, 449], 449, "k")
    assert sample_size_picker(col, "Points", 60000, key="k") == 2000 and col.seen[1] == [250, 500, 1000, 2000, 5000, 10000]
    assert sample_size_picker(Column(), "Points", 16, key="k") == 16        # one choice: no widget
    # with the train split too: "all" of train + test is offered last
    assert sample_size_picker(col, "Points", 10000, key="k", n_all=70000) == 2000
    assert col.seen[1][-2:] == [10000, 70000] and col.seen[4][-1] == "all 70,000"


def _folder_of_images(root, n_per_class=15):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / c / f"{c}-{i}.png")
    return root


def test_a_folder_dataset_shows_every_image_under_its_own_name(app_env, tmp_path, monkeypatch):
    """Pages show all 30 images of a folder (not its 6 test images) and name it by the folder, or by the zip's
    name for an upload, never by a server path."""
    import io
    import zipfile

    from ssl_viz.safety import extract_zip
    from ssl_viz.ui.diagnosis import dataset_title
    from ssl_viz.ui.sidebar import _name_upload

    folder = _folder_of_images(tmp_path / "my-pets")
    monkeypatch.setenv("SSL_VIZ_UPLOADS", str(tmp_path / "uploads"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.rglob("*.png")):
            zf.write(path, path.relative_to(folder).as_posix())
    unpacked = extract_zip(buf.getvalue(), tmp_path / "uploads" / "datasets")
    _name_upload(unpacked, "holiday.zip")
    for dataset, title in ((f"folder:{folder}", "my-pets"), (f"folder:{unpacked}", "holiday.zip")):
        pages = {}
        for page in ("home", "embeddings", "retrieval"):
            at = AppTest.from_file(f"../pages/{page}.py", default_timeout=120)
            at.session_state["ws_dataset"] = dataset
            at.session_state["emb_method"] = "PCA"
            at.run()
            assert not at.exception, [e.value for e in at.exception]
            pages[page] = at
        text = " ".join(m.value for m in pages["home"].markdown)
        assert f"**{title}** — 30 images" in text and str(tmp_path) not in text
        downloads = [b.proto.label for b in pages["embeddings"].get("download_button")]
        assert any("the 30 embeddings" in label for label in downloads), downloads
        assert pages["retrieval"].number_input(key="ret_query").proto.label == "Query: image index (0-29)"
        assert str(tmp_path) not in dataset_title(dataset) and title in dataset_title(dataset)
    neg = AppTest.from_file("../pages/negatives.py", default_timeout=120)
    neg.session_state["ws_dataset"] = f"folder:{folder}"
    neg.run()
    assert not neg.exception and any("Held-out figures here use the test split of my-pets (6 of 30" in c.value for c in neg.caption)
