"""Links that reproduce a view (ssl_viz.ui.links): the workspace and the page's settings in st.query_params.

AppTests run app.py the way the server does (every rerun through app.py) with query parameters set as a
browser opening a shared link would, then read back the widgets and ``at.query_params``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from ssl_viz.ui import links

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


@pytest.fixture()
def link_env(app_env, monkeypatch):
    """app_env, plus every rerun through app.py (AppTest would rerun a page file alone) and app.py's read
    confinement undone after the test."""
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def v2_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", v2_init)
    monkeypatch.setattr("ssl_viz.safety._READ_ROOTS", None)
    monkeypatch.delenv("SSL_VIZ_PASSWORD", raising=False)
    return app_env


def open_link(page: str, **params) -> AppTest:
    """A fresh browser session opening ``/page?params`` through app.py."""
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def sidebar_select(at: AppTest, label: str):
    return next(s for s in at.sidebar.selectbox if s.label == label)


def warnings(at: AppTest) -> str:
    return " ".join(w.value for w in at.warning)


# ----------------------------------------------------------------------------- (a) a link restores the view


def test_a_link_restores_the_workspace_and_the_page_settings(link_env):
    at = open_link("retrieval", ws_dataset="textures", ws_label="source", ws_representation="projector",
                   ret_k="5", ret_n="500", ret_query="7")
    assert at.title[0].value == "Retrieval" and not at.warning
    assert sidebar_select(at, "Dataset").value == "textures"
    assert sidebar_select(at, "Label by factor").value == "source"
    assert sidebar_select(at, "Embedding").value == "projector"
    assert at.session_state["ws_dataset"] == "textures" and at.session_state["ws_label"] == "source"
    assert at.slider(key="ret_k").value == 5
    assert at.select_slider(key="ret_n").value == 500
    assert at.number_input(key="ret_query").value == 7
    assert any("precision@5" in m.label for m in at.metric)
    # the URL names the whole view, the default encoder included
    qp = at.query_params
    assert qp["ret_k"] == "5" and qp["ret_n"] == "500" and qp["ws_dataset"] == "textures" and qp["ws_label"] == "source"
    assert qp["ws_model"] == str(link_env) and qp["ret_mode"] == "dataset image"


def test_a_link_names_another_encoder(link_env, tmp_path, monkeypatch):
    import shutil

    second = tmp_path / "models" / "second-simclr"
    shutil.copytree(link_env, second)
    shutil.copytree(link_env, tmp_path / "models" / link_env.name)
    monkeypatch.setenv("SSL_VIZ_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("SSL_VIZ_DEFAULT_MODEL", str(tmp_path / "models" / link_env.name))
    at = open_link("home", ws_model=str(second))
    assert sidebar_select(at, "Encoder").value == str(second) and at.session_state["ws_model"] == str(second)
    assert not at.warning and at.query_params["ws_model"] == str(second)


# ----------------------------------------------------------------------------- (b) the URL follows the widgets


def test_the_url_follows_the_widgets_and_the_page(link_env):
    at = open_link("retrieval")
    assert at.query_params["ret_k"] == "10" and at.query_params["ws_dataset"] == "digits"
    at.slider(key="ret_k").set_value(7).run()
    assert not at.exception and at.query_params["ret_k"] == "7"
    sidebar_select(at, "Dataset").set_value("textures").run()
    assert not at.exception and at.query_params["ws_dataset"] == "textures"
    assert at.query_params["ws_label"] == "orientation"  # the sidebar's label picker, written back
    # a page that stops early (no uploaded query yet) still leaves the URL right
    at.radio(key="ret_mode").set_value("upload").run()
    assert not at.exception and at.info and not at.get("plotly_chart")  # it stopped at the upload
    assert at.query_params["ret_mode"] == "upload" and at.query_params["ret_k"] == "7"
    # another page: the retrieval settings leave the URL, the workspace stays
    at.switch_page("pages/pairs.py").run()
    assert not at.exception and at.title[0].value == "Pairs & negatives"
    assert not [k for k in at.query_params if k.startswith("ret_")]
    assert at.query_params["ws_dataset"] == "textures" and at.query_params["pairs_n"] == "8"
    # the page's URL, opened in a new session, shows the same view
    again = open_link("pairs", **{**at.query_params, "pairs_n": "5"})
    assert sidebar_select(again, "Dataset").value == "textures" and again.slider(key="pairs_n").value == 5


def test_multiselects_and_toggles_round_trip(link_env):
    at = open_link("negatives", neg_sizes=["8", "32"], neg_k="4")
    assert at.multiselect(key="neg_sizes").value == [8, 32] and at.slider(key="neg_k").value == 4
    assert at.query_params["neg_sizes"] == ["8", "32"]


# ----------------------------------------------------------------------------- (c) what this server does not offer


def test_an_unavailable_encoder_or_dataset_is_one_warning_and_the_default(link_env, tmp_path):
    at = open_link("home", ws_model="/etc/passwd", ws_dataset=f"folder:{tmp_path}")
    text = warnings(at)
    assert "The link's encoder passwd is not available here; showing tiny-simclr." in text
    assert "is not available here; showing digits." in text and len(at.warning) == 2
    assert at.session_state["ws_model"] == str(link_env) and at.session_state["ws_dataset"] == "digits"
    assert at.query_params["ws_model"] == str(link_env) and at.query_params["ws_dataset"] == "digits"
    assert not at.error
    at.run()  # the warnings belong to the opening of the link only
    assert not at.exception and not at.warning


@pytest.mark.parametrize("dataset", ["folder", "folder:", "folder:../../etc", "nonsense", "folder:\x00x"])
def test_datasets_a_link_may_not_name(dataset):
    assert links.accepted_dataset(dataset) is None


def test_folders_and_uploads_a_link_may_name(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_VIZ_UPLOADS", str(tmp_path / "uploads"))
    monkeypatch.setenv("SSL_VIZ_DATA_ROOTS", str(tmp_path / "data"))
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "uploads" / "datasets" / "abc").mkdir(parents=True)
    (tmp_path / "uploads" / "checkpoints").mkdir(parents=True)
    ckpt = tmp_path / "uploads" / "checkpoints" / "0123.pt"
    ckpt.write_bytes(b"x")
    (tmp_path / "outside.pt").write_bytes(b"x")
    assert links.accepted_dataset("digits") == "digits"
    assert links.accepted_dataset(f"folder:{tmp_path / 'data' / 'cats'}") == f"folder:{(tmp_path / 'data' / 'cats').resolve()}"
    assert links.accepted_dataset(f"folder:{tmp_path / 'uploads' / 'datasets' / 'abc'}") is not None
    assert links.accepted_dataset(f"folder:{tmp_path}") is None  # outside the data roots
    assert links.accepted_model(str(ckpt)) == str(ckpt.resolve())
    assert links.accepted_model(str(tmp_path / "outside.pt")) is None
    assert links.accepted_model(str(tmp_path / "uploads" / "checkpoints" / ".." / ".." / "outside.pt")) is None
    assert links.accepted_model(str(tmp_path / "uploads" / "checkpoints" / "missing.pt")) is None


# ----------------------------------------------------------------------------- (d) values that do not fit


def test_bad_values_are_ignored(link_env):
    at = open_link("retrieval", ret_k="abc", ret_n="7", ret_mode="bogus", ret_query="1.5", ws_representation="nonsense")
    assert at.slider(key="ret_k").value == 10          # not an int
    assert at.select_slider(key="ret_n").value == 449  # not an offered size: Streamlit shows the default
    assert at.radio(key="ret_mode").value == "dataset image"  # not an option: Streamlit shows the default
    assert at.number_input(key="ret_query").value == 0
    assert sidebar_select(at, "Embedding").value == "backbone"
    assert at.query_params["ret_k"] == "10" and at.query_params["ret_mode"] == "dataset image"
    at = open_link("retrieval", ret_k="500")  # outside the slider's range: it would raise, so it is not restored
    assert at.slider(key="ret_k").value == 10 and not at.warning


def test_a_slider_range_that_depends_on_the_data_is_guarded(link_env):
    at = open_link("feature_maps", fm_index="100000", fm_max="16")
    assert at.slider(key="fm_index").value == 0 and at.slider(key="fm_max").value == 16
    assert not at.warning  # guarded by the page (range_or_default), not by run_page's rerun
    at = open_link("negatives", neg_anchor="1000", neg_batch="16")
    assert at.slider(key="neg_anchor").value == 0 and at.slider(key="neg_batch").value == 16 and not at.warning


def test_the_model_views_settings_are_linkable(link_env):
    at = open_link("kernels", kern_scale="global", kern_size="24", kern_max="16", kern_channel_0="0")
    assert at.radio(key="kern_scale").value == "global" and at.slider(key="kern_size").value == 24
    assert at.slider(key="kern_max").value == 16 and at.number_input(key="kern_channel_0").value == 0
    at = open_link("attention", att_indices="3, 4", att_target="view", att_policy="crop", att_seed="3",
                   att_method="integrated_gradients", att_steps="8")
    assert at.text_input(key="att_indices").value == "3, 4" and at.selectbox(key="att_policy").value == "crop"
    assert at.number_input(key="att_seed").value == 3 and at.slider(key="att_steps").value == 8
    assert at.query_params["att_policy"] == "crop" and at.query_params["att_steps"] == "8"


def test_a_widget_refusing_a_restored_value_reruns_with_the_defaults(link_env, monkeypatch):
    """A slider range the table does not know (a page's own rule): the page is run again without the link's values."""
    monkeypatch.setitem(links.LINKABLE["retrieval"], "ret_k", links.Param(int))
    at = open_link("retrieval", ret_k="500", ret_mode="dataset image")
    assert at.slider(key="ret_k").value == 10 and at.title[0].value == "Retrieval"
    assert "cannot show the link's settings" in warnings(at) and at.query_params["ret_k"] == "10"


def test_values_round_trip_through_url_text():
    param = links.Param(float, 0.0, 1.0)
    for value in (0.1, 0.05, 1.0, np.float64(0.35)):
        assert links.parse_value(links.format_value(value), param) == value
    assert links.format_value(True) == "true" and links.parse_value("false", links.BOOL) is False
    assert links.format_value(np.int64(3)) == "3" and links.format_value([1, 2]) == ["1", "2"]
    assert links.format_value(None) is None and links.format_value("") is None and links.format_value([]) is None
    bad = [("nan", links.FLOAT), ("inf", links.FLOAT), ("2", param), ("yes", links.BOOL), ("1.5", links.INT), ("x" * 2000, links.STR)]
    for text, kind in bad:
        with pytest.raises(ValueError):
            links.parse_value(text, kind)


# ----------------------------------------------------------------------------- the table covers the pages

WIDGETS = {"selectbox", "radio", "slider", "select_slider", "number_input", "toggle", "checkbox", "text_input", "multiselect"}


def keyed_settings(path: Path) -> set[str]:
    """The literal keys of settings widgets (``X.selectbox(..., key="...")`` and the like) in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WIDGETS:
            for kw in node.keywords:
                if kw.arg == "key" and isinstance(kw.value, ast.Constant):
                    found.add(kw.value.value)
    return found


@pytest.mark.parametrize("page", sorted(p.stem for p in (ROOT / "pages").glob("*.py")))
def test_every_settings_widget_of_a_page_is_linkable(page):
    assert page in links.LINKABLE
    missing = [k for k in keyed_settings(ROOT / "pages" / f"{page}.py") if links.param_of(k, page) is None]
    assert not missing, f"pages/{page}.py: add {missing} to ssl_viz.ui.links.LINKABLE"


def slider_ranges(path: Path) -> dict[str, tuple | None]:
    """key -> (min, max) of each keyed ``slider`` in ``path``; None when its range is not two number literals."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "slider":
            kws = {kw.arg: kw.value for kw in node.keywords}
            if not isinstance(kws.get("key"), ast.Constant):
                continue
            bounds = [*node.args[1:3], kws.get("min_value"), kws.get("max_value")]
            bounds = [b for b in bounds if b is not None][:2]
            literal = len(bounds) == 2 and all(isinstance(b, ast.Constant) for b in bounds)
            found[kws["key"].value] = (bounds[0].value, bounds[1].value) if literal else None
    return found


@pytest.mark.parametrize("page", sorted(p.stem for p in (ROOT / "pages").glob("*.py")))
def test_slider_ranges_in_the_table_are_the_pages(page):
    """A slider raises on a value outside its range: the table holds each fixed range, a page guards a range from data."""
    source = (ROOT / "pages" / f"{page}.py").read_text(encoding="utf-8")
    for key, bounds in slider_ranges(ROOT / "pages" / f"{page}.py").items():
        param = links.param_of(key, page)
        if bounds is None:
            assert f'range_or_default("{key}"' in source, f"pages/{page}.py: call range_or_default before slider {key}"
        else:
            assert (param.lo, param.hi) == bounds, f"{key}: LINKABLE has {(param.lo, param.hi)}, pages/{page}.py draws {bounds}"
