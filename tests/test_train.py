"""The training loop: a short real run, its files, resume, divergence; LARS; the Trainer built from parts."""

import json
from dataclasses import replace

import pytest
import torch

from ssl_viz.augment import MultiViewAugment, parse_policy
from ssl_viz.checkpoint import load_model
from ssl_viz.config import MethodConfig, TrainConfig
from ssl_viz.data import load_dataset
from ssl_viz.encoders import build_encoder
from ssl_viz.methods import build_method
from ssl_viz.train import LARS, Checkpointer, Trainer, TrainingError, lr_factor, read_metrics, train

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
    trainer = Trainer.from_config(cfg, tmp_path / "run")
    trainer.state.total_steps = 12
    # stop half-way as if cancelled, keeping the checkpoint
    trainer._finished = lambda: trainer.state.step >= 6
    trainer.fit()
    assert trainer.state.step == 6
    resumed = Trainer.from_config(cfg, tmp_path / "run")
    assert resumed.resume()
    assert resumed.state.step == 6 and resumed.state.total_steps == 12
    before = {k: v.clone() for k, v in resumed.method.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in trainer.method.state_dict().items())
    resumed.fit()
    assert resumed.state.step == 12


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(method="simclr", epochs=1, checkpoint_every=0.0, **TINY)
    trainer = Trainer.from_config(cfg, tmp_path / "run")
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
    # the weights after step 4 gave the NaN loss: the last checkpoint is step 3's, the last whose weights gave a finite loss
    assert json.loads((tmp_path / "run" / "card.json").read_text())["steps"] == 3
    assert torch.isfinite(model.encoder(torch.rand(2, 1, 8, 8))).all()


@pytest.mark.parametrize("method", ["memory_bank", "swav", "byol", "supervised"])
def test_every_method_runs_in_the_loop(tmp_path, method):
    cfg = TrainConfig(method=method, epochs=0.2, knn_every=0, **{k: v for k, v in TINY.items() if k != "knn_every"})
    state = train(cfg, tmp_path / method)
    assert state.stop_reason == "done" and state.step >= 4
    assert load_model(tmp_path / method).encoder is not None


# ----------------------------------------------------------------------------- optimisers


def naive_lars(params, grads, steps, lr, momentum=0.9, weight_decay=0.0, eta=0.001):
    """You et al. 2017 as SimCLR applies it, one tensor at a time in float64: 1-D tensors plain SGD with momentum."""
    params = [p.double().clone() for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    for t in range(steps):
        for i, p in enumerate(params):
            g = grads[t][i].double()
            if p.ndim > 1:
                g = g + weight_decay * p
                w_norm, g_norm = float(p.norm()), float(g.norm())
                g = g * (eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0)
            bufs[i] = momentum * bufs[i] + g
            params[i] = p - lr * bufs[i]
    return params


@pytest.mark.parametrize("weight_decay, eta", [(0.0, 0.001), (1e-4, 0.001), (5e-3, 0.02)])
def test_lars_matches_the_naive_per_tensor_formula(weight_decay, eta):
    g = torch.Generator().manual_seed(0)
    shapes = [(8, 4, 3, 3), (16, 8), (16,), (3,)]
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    params[1].zero_()   # a zero weight: trust ratio 1
    grads = [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for _ in range(4)]
    grads[2][0].zero_()  # a zero gradient (and weight decay) on the 4-D weight
    tensors = [torch.nn.Parameter(p.clone()) for p in params]
    opt = LARS([{"params": tensors[:2], "weight_decay": weight_decay}, {"params": tensors[2:], "weight_decay": 0.0}], lr=0.5, eta=eta)
    for step_grads in grads:
        for p, grad in zip(tensors, step_grads):
            p.grad = grad.clone()
        opt.step()
    for got, want in zip(tensors, naive_lars(params, grads, len(grads), lr=0.5, weight_decay=weight_decay, eta=eta)):
        torch.testing.assert_close(got.detach(), want)


def test_lars_trains_and_unknown_optimizers_are_named(tmp_path):
    cfg = TrainConfig(method="simclr", epochs=0.1, optimizer="lars", lr=0.5, knn_every=0, **{k: v for k, v in TINY.items() if k != "knn_every"})
    trainer = Trainer.from_config(cfg, tmp_path / "lars", callbacks=[])
    assert isinstance(trainer.optimizer, LARS)
    assert trainer.fit().stop_reason == "done"
    with pytest.raises(TrainingError, match="choose adamw, sgd or lars"):
        Trainer.from_config(replace(cfg, optimizer="lamb"), tmp_path / "lamb", callbacks=[])


# ----------------------------------------------------------------------------- what the Trainer is given


def test_trainer_takes_a_built_method_data_and_augmentation(tmp_path):
    """minGPT's seam: the Trainer runs what it is handed (moving the method to its device) and writes the usual files."""
    data = load_dataset("digits", "train").head(256, seed=0)
    cfg = TrainConfig(method="moco", epochs=1, knn_every=0, device="cpu", **{k: v for k, v in TINY.items() if k != "knn_every"})
    method = build_method("moco", build_encoder("small-cnn", in_channels=1, width=8), cfg.method_cfg, num_samples=len(data))
    augment = MultiViewAugment(parse_policy(cfg.augment), n_views=method.num_views)
    trainer = Trainer(method, data, augment, tmp_path / "run", cfg, callbacks=[Checkpointer(0.0)])
    assert trainer.method is method and trainer.data is data and trainer.steps_per_epoch == 256 // 64
    queue = method.queue.clone()
    state = trainer.fit()
    assert state.stop_reason == "done" and state.step == 4
    assert not torch.equal(method.queue, queue)  # on_step_end enqueued the keys of StepOutput.state
    assert load_model(tmp_path / "run").card["steps"] == 4


def test_knn_monitor_on_a_time_cadence_with_its_yardsticks_at_step_0(tmp_path):
    """knn_every_s: a short run reads from its first seconds (steps off here), at most one measurement per
    max(every_s, 4 x its cost); step 0 holds the untrained encoder's kNN and raw pixels' under the same protocol."""
    from ssl_viz.evaluate import pixel_knn_accuracy

    cfg = TrainConfig(method="simclr", time_budget=6.0, **{**TINY, "knn_every": 0}, knn_every_s=0.5)
    state = train(cfg, tmp_path / "run")
    records = [r for r in read_metrics(tmp_path / "run") if "knn_top1" in r]
    first = records[0]
    assert first["step"] == 0 and first["knn_top1"] == first["knn_untrained"]
    data, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    test, bank = test.head(200, seed=1), data.head(400, seed=2)  # the monitor's sampled protocol (knn_samples=200)
    assert first["knn_raw_pixels"] == pytest.approx(pixel_knn_accuracy(bank.images, bank.labels, test.images, test.labels))
    timed = records[1:]
    assert len(timed) >= 3, records  # a curve, not one dot at the end
    times = [r["time"] for r in timed]
    assert all(b - a >= 0.5 - 1e-6 for a, b in zip(times, times[1:-1]))  # the cadence (the last one is the end of the run)
    assert len(timed) <= 6.0 / 0.5 + 2 and timed[-1]["step"] == state.step
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps))  # the end of the run is not measured twice


def test_knn_monitor_yardsticks_on_a_test_set_smaller_than_its_sample(tmp_path):
    """digits' 450 test images are fewer than the default 2,000 samples: the whole (small) test set is the protocol,
    and the yardsticks are still recorded (only an explicit knn_samples=0 skips them)."""
    cfg = TrainConfig(method="simclr", epochs=0.2, **{**TINY, "knn_samples": 2000})
    train(cfg, tmp_path / "run")
    first = next(r for r in read_metrics(tmp_path / "run") if "knn_top1" in r)
    assert first["step"] == 0 and "knn_raw_pixels" in first and first["knn_untrained"] == first["knn_top1"]


def test_knn_monitor_full_protocol_records_no_yardsticks(tmp_path):
    """The full protocol (benchmarks' time-to-quality curves) spends no budget on the yardsticks."""
    cfg = TrainConfig(method="simclr", epochs=0.2, **{**TINY, "knn_samples": 0})
    train(cfg, tmp_path / "run")
    records = [r for r in read_metrics(tmp_path / "run") if "knn_top1" in r]
    assert records and all("knn_untrained" not in r and r["step"] > 0 for r in records)
