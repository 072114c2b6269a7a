"""AppTests of the training pages: Train (configure, start, live panel, controls) and Runs & compare."""

import json
import os
import signal
import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from ssl_viz.config import TrainConfig
from ssl_viz.fileio import read_json

TIMEOUT = 60


@pytest.fixture()
def runs_env(app_env, monkeypatch, tmp_path):
    """The AppTest environment with an empty runs folder; any run a test starts is killed afterwards."""
    monkeypatch.setenv("SSL_VIZ_MAX_RUNS", "1")
    root = tmp_path / "runs"
    yield root
    for run in root.glob("*"):
        pgid = (read_json(run / "job.json", {}) or {}).get("pgid")
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def fake_run(root, name: str, model_dir, knn: list[float], state: str = "done"):
    """A finished run directory without training: the tiny model's files plus curves and snapshots."""
    import shutil

    run = root / name
    shutil.copytree(model_dir, run)
    steps = [5 * (i + 1) for i in range(len(knn))]
    lines = [{"step": s, "time": s / 10, "loss": 5.0 - i, "lr": 1e-3, "images_per_s": 900.0} for i, s in enumerate(steps)]
    lines += [{"step": s, "time": s / 10, "knn_top1": k, "alignment": 0.5 + i / 10, "uniformity": -1.0 - i / 2} for i, (s, k) in enumerate(zip(steps, knn))]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    (run / "status.json").write_text(json.dumps({"state": state, "reason": state, "step": steps[-1], "total_steps": steps[-1],
                                                 "progress": 1.0, "elapsed": 3.0, "device": "cpu", "heartbeat": time.time(), "pid": 1}))
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(steps), 40, 8)).astype(np.float16)
    np.savez(run / "evolution.npz", steps=np.array(steps), embeddings=emb, labels=np.arange(40) % 4, class_names=np.array(list("abcd")))
    return run


def no_exception(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_train_page_starts_a_run_and_cancels_it(runs_env):
    at = no_exception(AppTest.from_file("../pages/train.py", default_timeout=TIMEOUT).run())
    assert at.title[0].value == "Train"
    for key in ("tr_method", "tr_encoder", "tr_dataset", "tr_preset"):
        assert at.selectbox(key=key) is not None
    assert at.button(key="tr_start") is not None and len(at.toggle) == 10
    assert any("no runs yet" in i.value.lower() for i in at.info)

    at.selectbox(key="tr_encoder").select("small-cnn").run()
    at.select_slider(key="tr_width").set_value(8)
    at.select_slider(key="tr_batch").set_value(64)
    at.number_input(key="tr_amount_epochs").set_value(1.0)
    at.number_input(key="tr_knn").set_value(5)
    at.toggle(key=f"tr_{TrainConfig().augment}_blur_on").set_value(True)
    no_exception(at.run())
    assert "--width 8" in at.code[0].value and "blur_p" in at.code[0].value
    assert "--knn-every-s 3.0" in at.code[0].value  # the page's time cadence: a short run's curve from its first seconds
    at.button(key="tr_start").click()
    no_exception(at.run())
    runs = [p for p in runs_env.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(runs) == 1
    job = read_json(runs[0] / "job.json")
    assert "--config" in job["argv"] and job["config"]["batch_size"] == 64 and job["config"]["encoder_width"] == 8 and "blur_p" in job["config"]["augment"]
    assert job["config"]["knn_every_s"] == 3.0
    assert at.selectbox(key="tr_watch").value == str(runs[0])
    assert at.button(key="tr_cancel") is not None  # the live panel offers to cancel
    at.button(key="tr_cancel").click()
    no_exception(at.run())
    from ssl_viz.jobs import wait_for

    assert wait_for(runs[0], timeout=30).state == "cancelled"


def test_train_page_controls_of_a_finished_run(runs_env, tiny_model_dir):
    run = fake_run(runs_env, "done-run", tiny_model_dir, [0.3, 0.5, 0.6])
    at = no_exception(AppTest.from_file("../pages/train.py", default_timeout=TIMEOUT).run())
    assert at.progress and at.get("plotly_chart")
    assert [m.value for m in at.metric][2] == "60.0%"
    at.button(key="tr_use").click()
    no_exception(at.run())
    assert at.session_state["ws_model"] == str(run)
    at.button(key="tr_delete").click()
    no_exception(at.run())
    assert at.warning and run.exists()  # asks first
    at.button(key="tr_delete_yes").click()
    no_exception(at.run())
    assert not run.exists()


def test_runs_page_table_compare_and_evolution(runs_env, tiny_model_dir):
    fake_run(runs_env, "run-a", tiny_model_dir, [0.3, 0.5, 0.6])
    fake_run(runs_env, "run-b", tiny_model_dir, [0.2, 0.4], state="cancelled")
    at = no_exception(AppTest.from_file("../pages/runs.py", default_timeout=TIMEOUT).run())
    assert at.title[0].value == "Runs & compare"
    table = at.dataframe[0].value
    assert set(table["run"]) == {"run-a", "run-b"} and set(table["status"]) == {"done", "cancelled"}
    assert set(at.multiselect(key="runs_compare").value) == {"run-a", "run-b"}
    assert len(at.get("plotly_chart")) == 3  # curves, plane, evolution
    at.selectbox(key="runs_metric").select("knn_top1")
    at.radio(key="runs_evo_proj").set_value("PCA")
    no_exception(at.run())
    at.selectbox(key="runs_use").select("run-b")
    at.button(key="runs_use_btn").click()
    no_exception(at.run())
    assert at.session_state["ws_model"] == str(runs_env / "run-b")


def test_runs_page_without_runs(runs_env):
    at = no_exception(AppTest.from_file("../pages/runs.py", default_timeout=TIMEOUT).run())
    assert any("no runs yet" in i.value.lower() for i in at.info)


def test_live_chart_draws_the_monitors_yardsticks_as_reference_lines():
    import pandas as pd

    from ssl_viz.analysis.runs import CURVE_METRICS, live_figure

    df = pd.DataFrame([{"step": 0, "time": 0.0, "knn_top1": 0.61, "knn_untrained": 0.61, "knn_raw_pixels": 0.70},
                       {"step": 10, "time": 3.1, "loss": 5.0, "knn_top1": 0.72}, {"step": 20, "time": 6.2, "knn_top1": 0.76}])
    df = df.reindex(columns=[*df.columns, *[m for m in CURVE_METRICS if m not in df]])  # as curve_frame gives it
    fig = live_figure(df)
    lines = sorted(shape.y0 for shape in fig.layout.shapes)
    assert lines == [0.61, 0.70]
    texts = [a.text for a in fig.layout.annotations]
    assert "untrained encoder 0.610" in texts and "raw pixels 0.700" in texts
    assert not live_figure(df.drop(columns=["knn_untrained", "knn_raw_pixels"])).layout.shapes  # older runs: no lines
