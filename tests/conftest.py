"""Shared test settings: small, CPU-only, deterministic."""

import os

import pytest
import torch

os.environ.setdefault("SSL_VIZ_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "test"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An untrained SimCLR small-cnn (width 8, grayscale) saved as a run directory, for page and loader tests."""
    from ssl_viz.checkpoint import save_run
    from ssl_viz.config import MethodConfig, TrainConfig
    from ssl_viz.encoders import build_encoder
    from ssl_viz.methods import build_method

    run = tmp_path_factory.mktemp("models") / "tiny-simclr"
    cfg = TrainConfig(method="simclr", encoder="small-cnn", encoder_width=8, dataset="digits",
                      method_cfg=MethodConfig(proj_dim=16, proj_hidden=32))
    torch.manual_seed(0)
    encoder = build_encoder("small-cnn", in_channels=1, width=8)
    method = build_method("simclr", encoder, cfg.method_cfg, num_samples=1347, num_classes=10)
    card = {"method": "simclr", "encoder": "small-cnn", "dataset": "digits", "in_channels": 1,
            "num_samples": 1347, "num_classes": 10, "steps": 0, "metrics": {}}
    save_run(run, method, cfg, card)
    return run


@pytest.fixture()
def app_env(tiny_model_dir, monkeypatch, tmp_path):
    """Environment for AppTests: the tiny model and digits as the default workspace, caches in tmp."""
    monkeypatch.setenv("SSL_VIZ_DEFAULT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SSL_VIZ_DEFAULT_DATASET", "digits")
    monkeypatch.setenv("SSL_VIZ_MODELS", str(tiny_model_dir.parent))
    monkeypatch.setenv("SSL_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("SSL_VIZ_CACHE", str(tmp_path / "cache"))
    return tiny_model_dir
