"""Background runs (ssl_viz.jobs) and run analysis (ssl_viz.analysis.runs): real short runs in subprocesses,
crash + resume, cancel, the queue, deletion, and Procrustes alignment."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from ssl_viz.analysis.runs import (
    Evolution,
    clean_metrics,
    evolution_figure,
    evolution_frames,
    load_evolution,
    orthogonal_procrustes,
    plane_points,
    procrustes_align,
    read_records,
    run_table,
)
from ssl_viz.checkpoint import load_model, read_state_dict
from ssl_viz.cli import CliError, build_parser, config_from_args, config_from_file, train_flags
from ssl_viz.config import MethodConfig, TrainConfig, from_dict, to_dict
from ssl_viz.fileio import read_json
from ssl_viz.jobs import (
    JobError,
    cancel_run,
    delete_run,
    list_runs,
    resume_run,
    run_status,
    start_run,
    wait_for,
)

TINY = TrainConfig(method="simclr", encoder="small-cnn", encoder_width=8, dataset="digits", epochs=1.0, batch_size=64, knn_every=5)
STEPS_PER_EPOCH = 1347 // 64


@pytest.fixture()
def runs_root(tmp_path, monkeypatch):
    """An empty runs folder and at most one run at a time; every process still alive is killed afterwards."""
    root = tmp_path / "runs"
    monkeypatch.setenv("SSL_VIZ_RUNS", str(root))
    monkeypatch.setenv("SSL_VIZ_MAX_RUNS", "1")
    yield root
    kill_all(root)


def kill_all(root) -> None:
    for run in root.glob("*"):
        pgid = (read_json(run / "job.json", {}) or {}).get("pgid")
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def wait_until(predicate, timeout: float = 90.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def card_steps(run) -> int:
    return int((read_json(run / "card.json", {}) or {}).get("steps", 0))


def assert_consistent(run, total: int | None = None, stopped: bool = True) -> None:
    """Checkpoint loads, metrics.jsonl parses line by line; a run that stopped (not crashed) has card == status."""
    model = load_model(run)
    assert torch.isfinite(model.encoder(torch.rand(2, 1, 8, 8))).all()
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
    status = read_json(run / "status.json")
    if stopped:
        assert card_steps(run) == status["step"]
    if total is not None:
        assert card_steps(run) == status["total_steps"] == total


# ---------------------------------------------------------------------------- fast checks


def test_train_flags_rebuild_the_config():
    """The Train page shows a run as ``python -m ssl_viz train FLAGS``: those flags parse back to the same config."""
    cfg = replace(TINY, dataset_label=None, time_budget=30.0, seed=3, checkpoint_every=0.0, amp=False,
                  augment="simclr+blur_p=0.5", method_cfg=replace(MethodConfig(), temperature=0.35))
    args = build_parser().parse_args(["train", *train_flags(cfg)])
    assert config_from_args(args) == cfg
    assert config_from_args(build_parser().parse_args(["train", *train_flags(replace(cfg, knn_samples=0))])).knn_samples == 0
    with pytest.raises(CliError, match="grad_clip"):
        train_flags(replace(TINY, grad_clip=1.0))


def test_train_config_file_with_flags_overriding_it(tmp_path):
    """``train --config FILE``: every field from the file (unknown keys ignored), the flags given on top of it."""
    cfg = replace(TINY, grad_clip=1.5, warmup_fraction=0.2, method_cfg=replace(MethodConfig(), sinkhorn_iters=7, temperature=0.3))
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**to_dict(cfg), "from_a_newer_version": 1}))
    args = build_parser().parse_args(["train", "--config", str(path), "--lr", "0.01", "--temperature", "0.5"])
    loaded = config_from_args(args, config_from_file(args.config))
    assert loaded == replace(cfg, lr=0.01, method_cfg=replace(cfg.method_cfg, temperature=0.5))
    assert config_from_args(build_parser().parse_args(["train"]), config_from_file(path)) == cfg


def test_procrustes_recovers_a_known_rotation():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    Y = 2.5 * X @ Q + rng.normal(size=6)
    R, s = orthogonal_procrustes(X - X.mean(0), Y - Y.mean(0))
    np.testing.assert_allclose(R, Q, atol=1e-8)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(procrustes_align(X, Y), Y, atol=1e-8)
    # 2-D: a rotated, reflected and shifted map comes back onto the reference
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag([1, -1])
    A = X[:, :2]
    np.testing.assert_allclose(procrustes_align(A @ rot + 3.0, A), A, atol=1e-8)


def test_evolution_frames_share_one_frame_of_reference():
    rng = np.random.default_rng(1)
    final = rng.normal(size=(60, 8))
    final /= np.linalg.norm(final, axis=1, keepdims=True)
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    evo = Evolution(np.array([0, 5, 10]), np.stack([final @ Q, final @ Q.T, final]).astype(np.float32), np.arange(60) % 3, ["a", "b", "c"])
    coords, steps = evolution_frames(evo, "pca")
    assert coords.shape == (3, 60, 2) and list(steps) == [0, 5, 10]
    np.testing.assert_allclose(coords[0], coords[2], atol=1e-4)  # a rotated copy lands on the last frame
    fig = evolution_figure(coords, evo.labels, steps, evo.class_names)
    assert len(fig.frames) == 3 and len(fig.data) == 3


def test_clean_metrics_keeps_one_history_after_resume():
    records = [{"step": 1, "loss": 5}, {"step": 10, "loss": 4}, {"step": 10, "knn_top1": 0.2}, {"step": 20, "loss": 3},
               {"step": 20, "loss": 2.9}, {"step": 10, "loss": 3.9}, {"step": 12, "loss": 3.5}]   # crash after 20, resumed from 8
    out = clean_metrics(records)
    assert [(r["step"], r.get("loss")) for r in out] == [(1, 5), (10, 3.9), (12, 3.5)]


def test_run_status_marks_dead_and_silent_runs_crashed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "runs" / "dead"
    run.mkdir(parents=True)
    (run / "log.txt").write_text("step 1\nTraceback (most recent call last):\nRuntimeError: out of memory\n")
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": dead.pid, "heartbeat": time.time(), "step": 3}))
    status = run_status(run)
    assert status.state == "crashed" and "out of memory" in status.reason
    assert read_json(run / "status.json")["state"] == "crashed"  # recorded on disk
    hung = tmp_path / "runs" / "hung"
    hung.mkdir()
    (hung / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid(), "heartbeat": time.time() - 1000}))
    assert run_status(hung).state == "crashed" and "heartbeat" in run_status(hung).reason
    with pytest.raises(JobError, match="cancel it"):
        delete_run(hung)  # its process (this one) lives
    with pytest.raises(JobError, match="does not look like a run"):
        delete_run(tmp_path)


# ---------------------------------------------------------------------------- real runs in the background


def test_a_background_run_trains_every_field_of_its_config(runs_root):
    """start_run writes config.json and launches ``train --config`` on it: fields that have no flag reach the training
    process (BYOL's predictor width shows in the checkpoint's shapes) and come back unchanged in the run's config.json."""
    cfg = replace(TINY, method="byol", max_train_images=256, knn_every=0, warmup_fraction=0.3, grad_clip=1.5,
                  method_cfg=replace(MethodConfig(), sinkhorn_iters=7, predictor_hidden=24))
    run = start_run(cfg, runs_root)
    job = read_json(run / "job.json")
    assert job["argv"][-6:] == ["train", "--config", str(run / "config.json"), "--out", str(run), "--quiet"]
    done = wait_for(run, timeout=120)
    assert done.state == "done", done.reason
    card = read_json(run / "card.json")
    assert "--config" in card["command"] and card["saved_at"] >= job["launched_at"]   # saved by the process that read it
    assert from_dict(TrainConfig, read_json(run / "config.json")) == cfg
    shapes = {k: tuple(v.shape) for k, v in read_state_dict(run / "checkpoint.safetensors").items() if k.startswith("predictor.")}
    assert shapes and any(24 in shape for shape in shapes.values()), shapes


def test_queue_cancel_and_a_selectable_run(runs_root):
    slow = start_run(replace(TINY, epochs=4.0, checkpoint_every=0.0, log_every=2), runs_root)
    quick = start_run(TINY, runs_root)
    spare = start_run(replace(TINY, seed=1), runs_root)
    assert len({slow, quick, spare}) == 3
    assert run_status(slow).state in ("starting", "running")
    assert run_status(quick).state == "queued" and run_status(spare).state == "queued"  # SSL_VIZ_MAX_RUNS=1
    assert cancel_run(spare).state == "cancelled"
    with pytest.raises(JobError, match="cancel it"):
        delete_run(slow)

    wait_until(lambda: card_steps(slow) >= 3, what="a first checkpoint")
    assert cancel_run(slow, wait=60).state == "cancelled"  # SIGTERM: the Trainer saves and stops
    assert_consistent(slow)
    assert 3 <= card_steps(slow) < 4 * STEPS_PER_EPOCH
    assert run_status(spare).state == "cancelled"  # a cancelled queued run never starts

    done = wait_for(quick, timeout=90)
    assert done.state == "done", done.reason
    assert_consistent(quick, STEPS_PER_EPOCH)
    assert read_json(quick / "job.json")["launched_at"] >= read_json(slow / "card.json")["saved_at"] - 1.0  # waited for the slot
    from ssl_viz.ui.workspace import available_models

    assert quick in [path for _, path, _ in available_models()]
    assert len(load_evolution(quick).steps) >= 3
    table = run_table(list_runs(runs_root))
    assert set(table["status"]) == {"done", "cancelled"} and table["kNN"].notna().sum() >= 2
    assert len(plane_points([quick])) >= 3

    delete_run(spare)
    assert not spare.exists() and len(list_runs(runs_root)) == 2


def test_sigkill_mid_training_then_resume_to_the_end(runs_root):
    epochs = 2
    run = start_run(replace(TINY, epochs=float(epochs), checkpoint_every=0.0, log_every=2), runs_root)
    wait_until(lambda: card_steps(run) >= 4, what="a checkpoint")
    os.killpg(read_json(run / "job.json")["pgid"], signal.SIGKILL)
    crashed = wait_for(run, states=("crashed",), timeout=10)
    assert crashed.state == "crashed" and "SIGKILL" in crashed.reason and crashed.resumable
    killed_at = card_steps(run)
    assert_consistent(run, stopped=False)

    assert resume_run(run).state in ("queued", "starting", "running")
    done = wait_for(run, timeout=90)
    assert done.state == "done", done.reason
    assert_consistent(run, epochs * STEPS_PER_EPOCH)
    assert killed_at < card_steps(run)
    steps = [r["step"] for r in read_records(run) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] >= epochs * STEPS_PER_EPOCH - 2  # logged every 2 steps
    evo = load_evolution(run)
    assert list(evo.steps) == sorted(set(evo.steps.tolist())) and evo.steps[-1] == epochs * STEPS_PER_EPOCH
    with pytest.raises(JobError, match="only cancelled or crashed"):
        resume_run(run)
