"""Hardening, round two (issue 15): small and degenerate data, runs that die early, poisoned weights, stop decisions.

Every example of the issue is a test here, asserting the right value: one sentence and exit status 2 on the
command line, a message on a page, a final ``status.json``, a checkpoint that loads and embeds finite numbers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from ssl_viz.checkpoint import load_model
from ssl_viz.cli import main
from ssl_viz.config import MethodConfig, TrainConfig
from ssl_viz.data import DatasetError, load_dataset
from ssl_viz.rundir import read_metrics, read_status
from ssl_viz.train import Callback, Checkpointer, MetricsLog, StopControl, Trainer, train

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--encoder", "small-cnn", "--width", "8", "--batch-size", "4", "--proj-dim", "16", "--queue-size", "16",
        "--prototypes", "4", "--device", "cpu", "--quiet"]
SMALL = dict(encoder="small-cnn", encoder_width=8, dataset="digits", batch_size=32, device="cpu", knn_every=0,
             method_cfg=MethodConfig(proj_dim=16, proj_hidden=32, queue_size=64, n_prototypes=10))


def image_folder(root: Path, per_class: dict[str, int], size: int = 16) -> Path:
    """A folder of random PNGs: one sub-folder per class name with that many images (name "" for flat files)."""
    rng = np.random.default_rng(len(per_class))
    for name, count in per_class.items():
        folder = root / name if name else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def run_cli(capsys, *args) -> tuple[int, str, list[str]]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip() and not line.startswith("note:")]


def assert_one_line_error(code: int, err: list[str], *words: str) -> None:
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0], err


# =============================================================================== 3. small or degenerate data


def test_supervised_on_a_one_class_folder_is_one_sentence(tmp_path, capsys):
    data = image_folder(tmp_path / "cats", {"cat": 6})
    code, _, err = run_cli(capsys, "train", "--method", "supervised", "--dataset", f"folder:{data}", "--epochs", "1",
                           "--out", tmp_path / "run", *TINY)
    assert_one_line_error(code, err, "supervised", "at least 2 classes", "only one class (cat)")
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_supervised_on_an_unlabelled_folder_is_one_sentence(tmp_path, capsys):
    data = image_folder(tmp_path / "flat", {"": 6})
    code, _, err = run_cli(capsys, "train", "--method", "supervised", "--dataset", f"folder:{data}", "--out", tmp_path / "run", *TINY)
    assert_one_line_error(code, err, "at least 2 classes", "no labels")


@pytest.mark.parametrize("knn_every", ["0", "2"])
def test_one_image_per_class_trains_and_ends_done(tmp_path, capsys, knn_every):
    """Every image goes to training, so there is no test split: the kNN monitor loads nothing when off, and
    turns itself off when on; the run trains and its status ends "done"."""
    data = image_folder(tmp_path / "few", {"a": 1, "b": 1, "c": 1})
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--method", "simclr", "--dataset", f"folder:{data}", "--epochs", "2",
                             "--knn-every", knn_every, "--out", run, *TINY)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["stop"] == "done"
    assert read_status(run)["state"] == "done"
    assert torch.isfinite(load_model(run).encoder(torch.rand(2, 3, 16, 16))).all()


@pytest.mark.parametrize("method", ["simclr", "moco", "swav", "byol", "memory_bank", "supervised"])
def test_every_method_on_a_one_image_folder_works_or_says_why(tmp_path, capsys, method):
    data = image_folder(tmp_path / "one", {"": 1})
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--method", method, "--dataset", f"folder:{data}", "--epochs", "3", "--out", run, *TINY)
    if method in ("memory_bank", "supervised"):
        assert_one_line_error(code, err, method)
        assert "at least 2" in err[0]
    else:
        assert code == 0, err
        assert read_status(run)["state"] == "done"
        assert torch.isfinite(load_model(run).encoder(torch.rand(2, 3, 16, 16))).all()


class Boom(Callback):
    """Raises at a chosen hook: an exception during set-up or training that the loop does not expect."""

    def __init__(self, where: str, at_step: int = 0) -> None:
        self.where, self.at_step = where, at_step

    def on_train_start(self, trainer) -> None:
        if self.where == "start":
            raise RuntimeError("boom at start")

    def on_step_end(self, trainer, logs) -> None:
        if self.where == "step" and trainer.state.step == self.at_step:
            raise RuntimeError("boom at step 3")


@pytest.mark.parametrize("where", ["start", "step"])
def test_any_exception_in_training_leaves_a_final_status(tmp_path, where):
    cfg = TrainConfig(method="simclr", epochs=1, max_train_images=256, **SMALL)
    trainer = Trainer.from_config(cfg, tmp_path / "run", callbacks=[MetricsLog(1), Checkpointer(60.0), Boom(where, 3)])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed" and "boom" in status["reason"], status


def test_an_exception_in_set_up_leaves_a_final_status(tmp_path):
    """A background run's directory says "starting" while its dataset loads: a dataset that fails ends it "failed"."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"state": "starting", "pid": os.getpid()}))
    cfg = TrainConfig(method="simclr", **{**SMALL, "dataset": f"folder:{tmp_path / 'missing'}"})
    with pytest.raises(DatasetError):
        train(cfg, run)
    status = read_status(run)
    assert status["state"] == "failed" and "does not exist" in status["reason"], status


def few_points_env(app_env, tmp_path, monkeypatch, per_class: dict[str, int]) -> Path:
    data = image_folder(tmp_path / "tiny-data", per_class)
    monkeypatch.setenv("SSL_VIZ_DEFAULT_DATASET", f"folder:{data}")
    return data


@pytest.mark.parametrize("method", ["UMAP", "t-SNE"])
def test_embeddings_page_with_too_few_points_says_so(app_env, tmp_path, monkeypatch, method):
    few_points_env(app_env, tmp_path, monkeypatch, {"a": 2, "b": 1})  # your own folder: the page maps all 3 images
    at = AppTest.from_file("../pages/embeddings.py", default_timeout=60)
    at.run()
    at.selectbox(key="emb_method").select(method)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("at least" in e.value and "points" in e.value for e in at.error), [e.value for e in at.error]


@pytest.mark.parametrize("page", ["pairs", "negatives", "retrieval", "attention", "feature_maps", "kernels", "home"])
def test_pages_with_fewer_images_than_their_defaults(app_env, tmp_path, monkeypatch, page):
    """Two test images, fewer than a default batch (Pairs: 8) or sample: every page draws or says why, no exception."""
    few_points_env(app_env, tmp_path, monkeypatch, {"a": 2, "b": 2})
    at = AppTest.from_file(f"../pages/{page}.py", default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_negatives_page_on_a_one_class_dataset_says_so(app_env, tmp_path, monkeypatch):
    few_points_env(app_env, tmp_path, monkeypatch, {"cat": 12})
    at = AppTest.from_file("../pages/negatives.py", default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("one class" in e.value and "two" in e.value for e in at.error), [e.value for e in at.error]


# =============================================================================== 5. runs that die early


def wait_for_metrics(run: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not any("loss" in r for r in read_metrics(run)):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.time() < deadline, "no metrics line in time"
        time.sleep(0.05)


def test_run_killed_before_its_first_checkpoint_resumes(tmp_path):
    """SIGKILL right after the first metrics line: config.json is there (written before step 1), and
    ``train --resume`` finishes the run to its original number of steps."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ssl_viz", "train", "--method", "simclr", "--encoder", "small-cnn", "--width", "8", "--dataset", "digits",
           "--max-train-images", "640", "--batch-size", "32", "--epochs", "2", "--knn-every", "0", "--log-every", "1",
           "--checkpoint-every", "1000", "--device", "cpu", "--out", str(run), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_metrics(run, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert (run / "config.json").exists() and read_status(run)["state"] == "running"  # what a killed run leaves
    result = subprocess.run([sys.executable, "-m", "ssl_viz", "train", "--resume", str(run), "--quiet"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["stop"] == "done" and out["steps"] == 2 * (640 // 32)
    assert read_status(run)["state"] == "done"
    steps = [r["step"] for r in read_metrics(run) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * (640 // 32)  # one history, no records of the killed attempt past it


def test_resume_without_a_checkpoint_starts_from_step_zero_with_the_same_config(tmp_path):
    cfg = TrainConfig(method="moco", epochs=1, max_train_images=256, checkpoint_every=1000.0, **SMALL)
    first = Trainer.from_config(cfg, tmp_path / "run", callbacks=[MetricsLog(1)])
    first._finished = lambda: first.state.step >= 3
    first.fit()
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
    again = Trainer.from_config(cfg, tmp_path / "run", callbacks=[MetricsLog(1), Checkpointer(1000.0)])
    assert again.fit(resume=True).stop_reason == "done"
    assert again.state.step == 256 // 32
    assert load_model(tmp_path / "run").card["steps"] == 256 // 32


class StatusLog(Callback):
    """Keeps every status.json record the MetricsLog writes during the run."""

    def __init__(self) -> None:
        self.records = []

    def on_step_end(self, trainer, logs) -> None:
        self.records.append(read_status(trainer.run_dir))


class TickingClock:
    """A ``time`` stand-in whose ``perf_counter`` advances 20 ms per call: the same pace on any machine."""

    def __init__(self) -> None:
        self.t = 0.0

    def perf_counter(self) -> float:
        self.t += 0.02
        return self.t


def test_status_totals_under_a_time_budget_are_estimated_from_the_pace(tmp_path, monkeypatch):
    import ssl_viz.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "time", TickingClock())
    cfg = TrainConfig(method="simclr", time_budget=3.0, epochs=1, max_train_images=128, **{**SMALL, "batch_size": 16})
    seen = StatusLog()
    trainer = Trainer.from_config(cfg, tmp_path / "run", callbacks=[MetricsLog(1), seen])
    state = trainer.fit()
    assert state.stop_reason == "done" and state.step > 10
    running = [r for r in seen.records if r["step"] >= 2]
    assert running and all(r["total_steps"] >= r["step"] and r["total_steps_estimated"] for r in running)
    assert all(r["total_steps"] > 128 // 16 for r in running[len(running) // 2:])  # not the epoch count (8)
    final = read_status(tmp_path / "run")
    assert final["state"] == "done" and final["total_steps"] == final["step"] == state.step and not final["total_steps_estimated"]


# =============================================================================== 6. poisoned weights


@pytest.mark.parametrize("every", ["0", "60"])
def test_divergence_at_lr_1e30_keeps_a_checkpoint_that_embeds_finite_numbers(tmp_path, capsys, every):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--method", "simclr", "--encoder", "small-cnn", "--width", "8", "--dataset", "digits",
                             "--max-train-images", "256", "--batch-size", "32", "--epochs", "3", "--knn-every", "0",
                             "--checkpoint-every", every, "--lr", "1e30", "--device", "cpu", "--out", run, "--quiet")
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and result["stop"].startswith("diverged"), (result, err)
    assert read_status(run)["state"] == "diverged"
    model = load_model(run)  # refuses NaN/inf weights
    assert model.card["steps"] < result["steps"]
    x = load_dataset("digits", "test").float_images(slice(0, 64))
    with torch.no_grad():
        assert torch.isfinite(model.encoder(x)).all() and torch.isfinite(model.projector(model.encoder(x))).all()


@pytest.mark.parametrize("every, kept", [(1000.0, 0), (0.0, 2)])
def test_weights_holding_nan_are_never_saved(tmp_path, every, kept):
    """A NaN smuggled into a BatchNorm buffer after step 3 (the training loss, on batch statistics, stays finite):
    neither a periodic checkpoint nor the final one saves it; the run ends diverged and the last good one loads."""

    class Poison(Callback):
        def on_step_end(self, trainer, logs) -> None:
            if trainer.state.step == 3:
                trainer.method.encoder.body.block1[1].running_var.fill_(float("nan"))

    cfg = TrainConfig(method="simclr", epochs=1, max_train_images=256, **SMALL)
    state = Trainer.from_config(cfg, tmp_path / "run", callbacks=[MetricsLog(1), Poison(), Checkpointer(every)]).fit()
    assert state.stop_reason.startswith("diverged") and "NaN" in state.stop_reason, state.stop_reason
    assert read_status(tmp_path / "run")["state"] == "diverged"
    model = load_model(tmp_path / "run")
    assert model.card["steps"] == kept
    assert torch.isfinite(model.encoder(torch.rand(4, 1, 8, 8))).all()


# =============================================================================== 8. stop decisions shared by every rank


def test_stop_control_decides_from_the_shared_clock_and_requests():
    stop = StopControl(time_budget=10.0)
    assert not stop.sync(4.0, rank=0, nonfinite=False) and stop.reason is None and stop.progress() == pytest.approx(0.4)
    assert stop.estimate_total(20) == 50
    assert stop.sync(5.0, rank=0, nonfinite=True)  # non-finite: every rank skips the update
    stop.request()
    stop.sync(6.0, rank=0, nonfinite=False)
    assert stop.reason == "cancelled"
    late = StopControl(time_budget=10.0)
    late.sync(10.5, rank=0, nonfinite=False)
    assert late.reason == "time budget" and late.progress() == 1.0


def test_a_stop_request_cancels_after_the_step_and_keeps_a_checkpoint(tmp_path):
    """What SIGTERM does inside the loop: the run stops after the current step, cancelled, with a final checkpoint."""

    class Cancel(Callback):
        def on_step_end(self, trainer, logs) -> None:
            if trainer.state.step == 3:
                trainer.request_stop()

    cfg = TrainConfig(method="simclr", epochs=2, max_train_images=256, **SMALL)
    state = Trainer.from_config(cfg, tmp_path / "run", callbacks=[MetricsLog(1), Checkpointer(1000.0), Cancel()]).fit()
    assert state.stop_reason == "cancelled" and state.step == 4
    assert read_status(tmp_path / "run")["state"] == "cancelled"
    assert load_model(tmp_path / "run").card["steps"] == 4


# =============================================================================== also: the symlink swapped after the check


def test_a_file_swapped_for_a_link_after_the_check_is_not_read(tmp_path):
    """resolve_user_path accepts the folder; then a file in it becomes a link to a secret outside the roots (and,
    second try, a folder above it becomes a link out): open_checked refuses both, a file under the roots opens."""
    from ssl_viz.safety import UnsafeInputError, confine_reads, open_checked, open_data_file, resolve_user_path

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "data" / "sub").mkdir(parents=True)
    (outside / "sub").mkdir(parents=True)
    (root / "data" / "sub" / "img.png").write_bytes(b"fine")
    (outside / "secret").write_bytes(b"secret")
    (outside / "sub" / "img.png").write_bytes(b"secret too")
    folder = resolve_user_path(str(root / "data"), [root])  # the check passes: nothing links out yet
    target = folder / "sub" / "img.png"
    with open_checked(target, [root]) as fh:
        assert fh.read() == b"fine"

    (folder / "sub" / "img.png").unlink()                    # swap the file for a link out
    (folder / "sub" / "img.png").symlink_to(outside / "secret")
    with pytest.raises(UnsafeInputError, match="outside the data folders"):
        open_checked(target, [root])

    (folder / "sub" / "img.png").unlink()                    # swap a folder above it for a link out
    (folder / "sub").rmdir()
    (folder / "sub").symlink_to(outside / "sub", target_is_directory=True)
    with pytest.raises(UnsafeInputError):
        open_checked(target, [root])

    confine_reads([root])
    try:
        with pytest.raises(UnsafeInputError):
            open_data_file(target)
    finally:
        confine_reads(None)
    with open_data_file(target) as fh:  # unconfined (the command line): your own files, links included
        assert fh.read() == b"secret too"


def test_open_checked_refuses_a_link_that_appears_while_the_path_is_walked(tmp_path, monkeypatch):
    """The race itself: the path is resolved (no link), then a folder on it becomes a link before the open;
    the component-by-component open with O_NOFOLLOW meets the link and refuses, never following it."""
    import ssl_viz.safety as safety

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "f.png").write_bytes(b"fine")
    (outside / "f.png").write_bytes(b"secret")
    real_open_beneath = safety._open_beneath

    def swap_then_open(base, parts, flags):
        (root / "a" / "f.png").unlink()
        (root / "a").rmdir()
        (root / "a").symlink_to(outside, target_is_directory=True)
        return real_open_beneath(base, parts, flags)

    monkeypatch.setattr(safety, "_open_beneath", swap_then_open)
    with pytest.raises(safety.UnsafeInputError, match="symbolic link"):
        safety.open_checked(root / "a" / "f.png", [root])


def test_a_fifo_or_folder_is_refused_without_blocking(tmp_path):
    from ssl_viz.safety import UnsafeInputError, open_checked

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "dir").mkdir()
    for name in ("pipe", "dir"):
        with pytest.raises((UnsafeInputError, IsADirectoryError)):
            open_checked(tmp_path / name, [tmp_path])


# =============================================================================== also: served beyond loopback


def serve_like_make_run(monkeypatch) -> None:
    """Route every rerun through app.py, as the real server does (ssl_viz.ui.serve clears Streamlit's pages/ flag;
    AppTest sets it again before each run, which would rerun the page file alone)."""
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def v2_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", v2_init)


def test_password_gate_in_front_of_every_page(app_env, monkeypatch):
    monkeypatch.setattr("ssl_viz.safety._READ_ROOTS", None)  # app.py confines this process's reads: undone after the test
    monkeypatch.setenv("SSL_VIZ_PASSWORD", "s3cret-ü")
    serve_like_make_run(monkeypatch)
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["ssl-viz"] and not at.sidebar.selectbox  # the form only: no page, no sidebar
    at.text_input(key="ssl_viz_password_input").input("wrong")
    at.button[0].click()
    at.run()
    assert not at.exception and any(e.value == "Wrong password." for e in at.error)
    assert [t.value for t in at.title] == ["ssl-viz"]
    at.text_input(key="ssl_viz_password_input").input("s3cret-ü")
    at.button[0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("what contrastive learning does" in t.value for t in at.title)  # the Overview page ran
    at.run()  # remembered in the session
    assert any("what contrastive learning does" in t.value for t in at.title)


def test_a_page_run_without_app_py_is_gated_too(app_env, monkeypatch):
    """A deep link to a fresh plain ``streamlit run`` server runs the page file alone: it still asks first."""
    monkeypatch.setenv("SSL_VIZ_PASSWORD", "pw")
    at = AppTest.from_file("../pages/kernels.py", default_timeout=60)
    at.run()
    assert not at.exception and not at.image and [t.value for t in at.title] == ["Kernels", "ssl-viz"]
    at.text_input(key="ssl_viz_password_input").input("pw")
    at.button[0].click()
    at.run()
    assert not at.exception and at.image  # the kernels are drawn


def test_no_password_no_gate(app_env, monkeypatch):
    monkeypatch.setattr("ssl_viz.safety._READ_ROOTS", None)
    monkeypatch.delenv("SSL_VIZ_PASSWORD", raising=False)
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.run()
    assert not at.exception and any("what contrastive learning does" in t.value for t in at.title)


def test_password_comparison_is_exact():
    from ssl_viz.ui.access import password_matches

    assert password_matches("abc", "abc") and password_matches("ü", "ü")
    assert not password_matches("abc", "abd") and not password_matches("", "abc") and not password_matches("abcd", "abc")


@pytest.mark.parametrize("argv, env, flags, warned", [
    (["--server.address", "127.0.0.1"], {}, [], False),
    (["--server.address=localhost"], {}, [], False),
    (["--server.address", "::1"], {}, [], False),
    (["--server.address", "0.0.0.0"], {}, ["--client.showErrorDetails=none"], True),
    (["--server.address=0.0.0.0", "--server.port=8501"], {"SSL_VIZ_PASSWORD": "x"}, ["--client.showErrorDetails=none"], False),
    (["--server.address", "192.168.1.5", "--client.showErrorDetails", "full"], {}, [], True),  # an explicit choice is kept
    ([], {"STREAMLIT_SERVER_ADDRESS": "10.0.0.2"}, ["--client.showErrorDetails=none"], True),
    ([], {}, ["--client.showErrorDetails=none"], True),  # no address anywhere: Streamlit listens on every interface
])
def test_serve_flags_beyond_loopback(tmp_path, argv, env, flags, warned):
    from ssl_viz.ui.access import serve_flags

    got, warnings = serve_flags(argv, env, folders=[tmp_path])
    assert got == flags
    assert bool(warnings) == warned and all("SSL_VIZ_PASSWORD" in w for w in warnings)


def test_serve_reads_the_address_of_config_toml_and_passes_the_flags(tmp_path, monkeypatch, capsys):
    from streamlit.web import cli

    from ssl_viz.ui import access, serve

    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "config.toml").write_text('[server]\naddress = "127.0.0.1"\n')
    assert access.listen_address([], {}, [tmp_path]) == "127.0.0.1"
    assert access.listen_address([], {}, [ROOT]) == "127.0.0.1"  # the repository's own config: loopback
    seen = {}
    monkeypatch.setattr(cli, "main", lambda: seen.setdefault("argv", list(sys.argv)) and 0)
    monkeypatch.delenv("SSL_VIZ_PASSWORD", raising=False)
    with pytest.raises(SystemExit):
        serve.main(["--server.address", "0.0.0.0", "--server.port", "8502"])
    assert seen["argv"][-1] == "--client.showErrorDetails=none" and "--server.address" in seen["argv"]
    assert "without a password" in capsys.readouterr().err


def test_the_app_reads_a_folder_skipping_files_swapped_for_links_out(tmp_path):
    """With the server's confinement on, the folder loader opens every file through open_checked: a file that became
    a link out of the roots after the path check is skipped (and listed), the others load."""
    from ssl_viz.data import folder as folder_loader
    from ssl_viz.safety import confine_reads, resolve_user_path

    root, outside = tmp_path / "root", tmp_path / "outside"
    data = image_folder(root / "data", {"a": 3, "b": 3})
    image_folder(outside, {"": 1})
    checked = resolve_user_path(str(data), [root])
    (checked / "a" / "0.png").unlink()
    (checked / "a" / "0.png").symlink_to(outside / "0.png")
    confine_reads([root])
    try:
        n = len(folder_loader.load("train", checked))  # the loader itself: load_dataset caches per process
        report = folder_loader.last_report
        n += len(folder_loader.load("test", checked))
    finally:
        confine_reads(None)
    assert n == 5
    assert any("0.png" in str(p) and "outside the data folders" in why for p, why in report.skipped), report.skipped
    unconfined = len(folder_loader.load("train", checked)) + len(folder_loader.load("test", checked))
    assert unconfined == 6  # the command line reads your own files, links included


def test_the_training_processes_the_app_starts_inherit_its_confinement(tmp_path, monkeypatch):
    import ssl_viz.safety as safety

    monkeypatch.setenv(safety.READ_ROOTS_ENV, os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert safety._env_read_roots() == [Path(os.path.realpath(tmp_path / "a")), Path(os.path.realpath(tmp_path / "b"))]
    monkeypatch.delenv(safety.READ_ROOTS_ENV)
    assert safety._env_read_roots() is None
