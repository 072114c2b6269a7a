"""AppTests of the Diagnose augmentations and Negatives & bias pages (tiny untrained model, digits)."""

import os
import shutil
import signal

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ssl_viz.augment import knobs_from_policy, parse_policy, policy_to_spec
from ssl_viz.fileio import read_json
from ssl_viz.rundir import read_config, read_job, write_status


def run(page: str, **state) -> AppTest:
    at = AppTest.from_file(f"../pages/{page}.py", default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame(at: AppTest, column: str):
    """The first table of the page (st.dataframe or st.table) with ``column`` (AppTest does not expose their keys)."""
    return next(d.value for d in [*at.dataframe, *at.table] if column in d.value.columns)


def no_exception(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_diagnose_page(app_env):
    at = run("diagnose", diag_n=300, diag_augs=["grayscale", "rotate90", "flip", "crop"])
    assert at.title[0].value == "Diagnose augmentations"
    assert not at.error
    # 1. the dose-response: one chart, one summary row per augmentation with a verdict and its sentence
    assert len(at.get("plotly_chart")) == 1
    summary = frame(at, "summary")
    assert list(summary["augmentation"]) == ["grayscale", "rotate90", "flip", "crop"]
    assert summary["verdict"].str.match(r"^(safe|safe up to 0\.\d|unsafe|no effect)$").all()
    assert summary["summary"].str.len().gt(10).all()
    # digits are grayscale: grayscale changes nothing at any probability
    assert summary.loc[summary["augmentation"] == "grayscale", "verdict"].item() == "no effect"
    # 2. the recommended policy: a spec that parses, the button to train with it
    spec = at.code[0].value
    assert policy_to_spec(parse_policy(spec)) == spec
    assert at.button(key="diag_train") is not None
    # 3. the verification action, nothing launched yet
    assert at.button(key="diag_verify_go") is not None and not any("Verification on" in p.text for p in at.get("progress"))
    # 4. before / after strips, one per augmentation, at the middle strength; the numbers at that strength
    assert at.select_slider(key="diag_strength").value == 0.6
    assert len(at.get("image")) == 4
    table = frame(at, "label_damage")
    assert list(table["name"]) == ["grayscale", "rotate90", "flip", "crop"]
    assert table["verdict"].isin(["harmful", "neutral", "suitable"]).all()
    assert table["invariance"].notna().all()                       # the encoder was measured
    assert len(at.get("download_button")) == 2

    at.select_slider(key="diag_strength").set_value(1.0)
    at.toggle(key="diag_encoder").set_value(False)
    no_exception(at.run())
    table = frame(at, "label_damage")
    assert table["invariance"].isna().all() and len(at.get("plotly_chart")) == 1
    assert table.loc[table["name"] == "grayscale", "verdict"].item() == "neutral"

    at.multiselect(key="diag_augs").set_value([]).run()
    assert not at.exception and at.info                             # nothing to diagnose: a hint, no traceback


def test_diagnose_page_relabels_a_factor_dataset(app_env):
    at = run("diagnose", ws_dataset="shapes", diag_n=300, diag_augs=["grayscale", "flip"], diag_encoder=False)
    assert at.selectbox(key="diag_label").value == "shape"
    assert at.header[0].value == "Dose-response on shapes by shape"
    at.selectbox(key="diag_label").set_value("color").run()
    no_exception(at)
    assert at.header[0].value == "Dose-response on shapes by color"
    summary = frame(at, "summary")
    grayscale = summary.loc[summary["augmentation"] == "grayscale"].iloc[0]
    assert "harmful from" in grayscale["summary"] and grayscale["verdict"] != "safe"   # colour labels: grayscale erases them
    assert "grayscale_p" not in at.code[0].value
    at.select_slider(key="diag_strength").set_value(1.0).run()
    table = frame(at, "label_damage")
    assert table.loc[table["name"] == "grayscale", "verdict"].item() == "harmful"


def test_diagnose_page_says_what_is_wrong_with_the_data(app_env, tmp_path):
    flat = tmp_path / "flat"                                        # images without classes
    flat.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(flat / f"{i}.png")
    at = run("diagnose", ws_dataset=f"folder:{flat}", diag_encoder=False)
    assert len(at.error) == 1 and "flat has no labels" in at.error[0].value
    assert str(tmp_path) not in at.error[0].value                   # named as the user knows it, not by its path
    # photos: one image per class when labelled by photo, too few for the probe
    at = run("diagnose", ws_dataset="photos", diag_encoder=False)
    assert len(at.error) == 1 and at.error[0].value.startswith("Cannot diagnose photos by photo:")


def test_dataset_titles_name_what_the_user_chose(monkeypatch, tmp_path):
    from ssl_viz.ui.diagnosis import dataset_title

    monkeypatch.setenv("SSL_VIZ_UPLOADS", str(tmp_path / "uploads"))
    zipped = tmp_path / "uploads" / "datasets" / "0123456789abcdef"
    zipped.mkdir(parents=True)
    assert dataset_title("fashion-mnist") == "fashion-mnist"
    assert dataset_title("shapes", "color") == "shapes by color"
    assert dataset_title(f"folder:{tmp_path}/cats", "class") == "folder cats by class"
    assert dataset_title(f"folder:{zipped}") == "your uploaded images"  # an upload from before its name was recorded
    (zipped / ".zip-name").write_text("pets.zip")
    assert dataset_title(f"folder:{zipped}", "class") == "zip pets.zip by class"


def test_train_with_this_policy_sets_the_train_page_knobs(app_env):
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.session_state["diag_n"] = 300
    at.session_state["diag_augs"] = ["crop", "color_jitter", "flip", "blur"]
    at.session_state["diag_encoder"] = False
    at.switch_page("pages/diagnose.py")
    no_exception(at.run())
    spec = at.code[0].value
    policy = parse_policy(spec)
    at.button(key="diag_train").click()
    no_exception(at.run())
    # the Train page is open, its preset is the recommended policy and every knob shows it
    assert at.title[0].value == "Train"
    assert at.session_state["tr_policy_spec"] == spec and at.selectbox(key="tr_preset").value == "recommended"
    assert at.selectbox(key="tr_dataset").value == "digits"
    for knob, (on, value) in knobs_from_policy(policy).items():
        assert at.toggle(key=f"tr_recommended_{knob}_on").value == on, knob
        assert at.slider(key=f"tr_recommended_{knob}_value").value == pytest.approx(value), knob
    assert f"--augment {spec}" in at.code[0].value or f"--augment '{spec}'" in at.code[0].value


def _kill(run_dir) -> None:
    pgid = read_job(run_dir).get("pgid")
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def test_verification_queues_three_runs_and_shows_their_table(app_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_VIZ_MAX_RUNS", "1")
    root = tmp_path / "runs"
    at = run("diagnose", diag_n=300, diag_augs=["crop", "flip"], diag_encoder=False, diag_verify_budget=5)
    spec = at.code[0].value
    at.button(key="diag_verify_go").click()
    try:
        no_exception(at.run())
        runs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        assert len(runs) == 3
        configs = {read_config(r).augment: read_config(r) for r in runs}
        assert set(configs) == {spec, "simclr", "simclr-small"}
        assert all(c.method == "simclr" and c.dataset == "digits" and c.time_budget == 5 for c in configs.values())
        progress = [p.text for p in at.get("progress") if "Verification on digits" in p.text]
        assert progress and "0/3 done" in progress[0]
        assert not [d for d in at.dataframe if "kNN top-1" in d.value.columns]   # no table before the runs are done
    finally:
        for r in root.iterdir():
            _kill(r)
    # the runs finish (faked: the tiny model's checkpoint and a done status, written through rundir)
    for r in runs:
        for f in app_env.iterdir():                                    # width 8: its config.json too
            shutil.copy(f, r / f.name)
        write_status(r, {"state": "done", "reason": "done", "step": 10, "total_steps": 10, "progress": 1.0, "elapsed": 5.0})
    at.button(key="diag_verify_refresh").click()
    no_exception(at.run())
    table = frame(at, "kNN top-1")
    assert list(table["policy"]) == ["recommended", "simclr", "simclr-small"]
    assert list(table["augment"]) == [spec, "simclr", "simclr-small"]
    assert table["kNN top-1"].between(0.1, 1.0).all()               # measured on digits with each run's checkpoint
    manifest = at.session_state["diag_verify"]
    assert read_json(manifest)["knn_top1"]["simclr"] == pytest.approx(table["kNN top-1"][1], abs=1e-4)


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
