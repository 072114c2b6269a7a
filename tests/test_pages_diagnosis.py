"""AppTests of the Diagnose augmentations and Negatives & bias pages (tiny untrained model, digits)."""

from streamlit.testing.v1 import AppTest


def run(page: str, **state) -> AppTest:
    at = AppTest.from_file(f"../pages/{page}.py", default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_diagnose_page(app_env):
    at = run("diagnose", diag_n=300, diag_augs=["grayscale", "rotate90", "flip"])
    assert at.title[0].value == "Diagnose augmentations"
    assert len(at.get("plotly_chart")) == 1
    table = at.dataframe[0].value
    assert list(table["name"]) == ["grayscale", "rotate90", "flip"]
    assert table["verdict"].isin(["harmful", "neutral", "suitable"]).all()
    assert table["invariance"].notna().all()                       # the encoder was measured
    assert len(at.get("download_button")) == 2
    assert not at.error
    # digits are grayscale: grayscale changes nothing, so it cannot be suitable
    assert table.loc[table["name"] == "grayscale", "verdict"].item() == "neutral"

    at.slider(key="diag_strength").set_value(0.5)
    at.toggle(key="diag_encoder").set_value(False)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert table["invariance"].isna().all() and len(at.get("plotly_chart")) == 1

    at.multiselect(key="diag_augs").set_value([]).run()
    assert not at.exception and at.info                             # nothing to diagnose: a hint, no traceback


def test_diagnose_page_relabels_a_factor_dataset(app_env):
    at = AppTest.from_file("../pages/diagnose.py", default_timeout=120)
    at.session_state["ws_dataset"] = "shapes"
    at.session_state["diag_n"] = 300
    at.session_state["diag_augs"] = ["grayscale", "flip"]
    at.session_state["diag_encoder"] = False
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="diag_label").value == "shape"
    at.selectbox(key="diag_label").set_value("color").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert table.loc[table["name"] == "grayscale", "verdict"].item() == "harmful"


def test_negatives_page(app_env):
    at = run("negatives", neg_n=500)
    assert at.title[0].value == "Negatives & bias"
    assert len(at.get("plotly_chart")) == 2                          # false negatives vs batch size + per-class bias
    fn = at.dataframe[0].value
    assert {"measured_rate", "expected_rate", "measured_any", "expected_any"} <= set(fn.columns)
    assert (fn["measured_rate"] - fn["expected_rate"]).abs().max() < 0.03
    assert len(at.dataframe[1].value) == 10      # one row per digit class
    at.slider(key="neg_batch").set_value(16)
    at.slider(key="neg_anchor").set_value(3)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.multiselect(key="neg_sizes").set_value([16]).run()
    assert not at.exception and len(at.dataframe[0].value) == 2
