"""The training loop: a short real run, its files, resume, divergence."""

import json

import pytest
import torch

from ssl_viz.checkpoint import load_model
from ssl_viz.config import MethodConfig, TrainConfig
from ssl_viz.train import Trainer, lr_factor, read_metrics, train

TINY = dict(encoder="small-cnn", encoder_width=8, dataset="digits", batch_size=64, log_every=2, knn_every=4, knn_samples=200,
            method_cfg=MethodConfig(proj_dim=16, proj_hidden=32, queue_size=128, n_prototypes=10))


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0.0, 0.1) < 0.01
    assert lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1) == pytest.approx(0.5)
    assert lr_factor(1.0, 0.1) == pytest.approx(0.0, abs=1e-9)


def test_short_run_writes_everything(tmp_path):
    cfg = TrainConfig(method="simclr", epochs=0.5, **TINY)
    state = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert state.stop_reason == "done" and state.step == round(0.5 * (1347 // 64))
    for name in ("config.json", "card.json", "checkpoint.safetensors", "trainer_state.pt", "metrics.jsonl", "status.json"):
        assert (run / name).exists(), name
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == state.step
    records = read_metrics(run)
    assert any("knn_top1" in r for r in records) and any("loss" in r for r in records)
    card = json.loads((run / "card.json").read_text())
    assert card["steps"] == state.step and 0.0 <= card["metrics"]["knn_top1"] <= 1.0 and "torch" in card["versions"]
    model = load_model(run)
    assert model.encoder(torch.rand(2, 1, 8, 8)).shape == (2, 64)


def test_resume_continues_to_original_budget(tmp_path):
    cfg = TrainConfig(method="moco", epochs=2, **TINY)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.state.total_steps = 12
    # stop half-way as if cancelled, keeping the checkpoint
    trainer._finished = lambda: trainer.state.step >= 6
    trainer.fit()
    assert trainer.state.step == 6
    resumed = Trainer(cfg, tmp_path / "run")
    assert resumed.resume()
    assert resumed.state.step == 6 and resumed.state.total_steps == 12
    before = {k: v.clone() for k, v in resumed.method.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in trainer.method.state_dict().items())
    resumed.fit()
    assert resumed.state.step == 12


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(method="simclr", epochs=1, checkpoint_every=0.0, **TINY)
    trainer = Trainer(cfg, tmp_path / "run")
    original = trainer.train_step
    calls = {"n": 0}

    def exploding(index):
        calls["n"] += 1
        if calls["n"] >= 5:
            raise FloatingPointError("loss became nan at step 4")
        return original(index)

    trainer.train_step = exploding
    state = trainer.fit()
    assert state.stop_reason.startswith("diverged")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "diverged" and "nan" in status["reason"]
    model = load_model(tmp_path / "run")  # the last good checkpoint still loads
    assert json.loads((tmp_path / "run" / "card.json").read_text())["steps"] == 4
    assert torch.isfinite(model.encoder(torch.rand(2, 1, 8, 8))).all()


@pytest.mark.parametrize("method", ["memory_bank", "swav", "byol", "supervised"])
def test_every_method_runs_in_the_loop(tmp_path, method):
    cfg = TrainConfig(method=method, epochs=0.2, knn_every=0, **{k: v for k, v in TINY.items() if k != "knn_every"})
    state = train(cfg, tmp_path / method)
    assert state.stop_reason == "done" and state.step >= 4
    assert load_model(tmp_path / method).encoder is not None
