"""AppTests of the model views: kernels, feature maps, attention (tiny models, digits)."""

import shutil
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

TIMEOUT = 60


def save_tiny(root, name: str, method: str, encoder: str) -> None:
    from ssl_viz.checkpoint import save_run
    from ssl_viz.config import MethodConfig, TrainConfig
    from ssl_viz.encoders import build_encoder
    from ssl_viz.methods import build_method

    cfg = TrainConfig(method=method, encoder=encoder, encoder_width=8, dataset="digits",
                      method_cfg=MethodConfig(proj_dim=16, proj_hidden=32))
    torch.manual_seed(sum(map(ord, name)))  # different weights per model
    enc = build_encoder(encoder, in_channels=1, width=8)
    card = {"method": method, "encoder": encoder, "dataset": "digits", "in_channels": 1, "num_samples": 1347, "num_classes": 10,
            "steps": 0, "metrics": {}}
    save_run(root / name, build_method(method, enc, cfg.method_cfg, num_samples=1347, num_classes=10), cfg, card)


@pytest.fixture(scope="module")
def models_root(tiny_model_dir, tmp_path_factory):
    """The tiny SimCLR model, a tiny supervised one and a tiny ViT, in one models folder."""
    root = tmp_path_factory.mktemp("view_models")
    shutil.copytree(tiny_model_dir, root / tiny_model_dir.name)
    save_tiny(root, "tiny-supervised", "supervised", "small-cnn")
    save_tiny(root, "tiny-vit", "simclr", "vit-tiny")
    return root


@pytest.fixture()
def views_env(app_env, models_root, monkeypatch):
    monkeypatch.setenv("SSL_VIZ_MODELS", str(models_root))
    monkeypatch.setenv("SSL_VIZ_DEFAULT_MODEL", str(models_root / app_env.name))
    return models_root


def run_page(name: str) -> AppTest:
    at = AppTest.from_file(f"../pages/{name}.py", default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_kernels_page(views_env):
    at = run_page("kernels")
    assert at.title[0].value == "Kernels"
    assert len(at.image) >= 2 and len(at.dataframe) == 1
    assert at.get("plotly_chart")
    at.selectbox(key="kern_layer_0").select("body.block3.0")
    at.number_input(key="kern_channel_0").set_value(2)
    at.radio[0].set_value("global")
    at.run()
    assert not at.exception
    assert "input channel 2" in at.image[1].proto.imgs[0].caption
    # a second encoder side by side
    at.selectbox[0].select(str(views_env / "tiny-supervised"))
    at.run()
    assert not at.exception and len(at.image) >= 4 and len(at.dataframe) == 2


def test_kernels_page_puts_the_colour_reference_beside_the_workspace_by_default(views_env, tmp_path, monkeypatch):
    """The shipped colour model (7x7 first layer) is the default comparison; without it, none."""
    root = tmp_path / "models"
    shutil.copytree(views_env / "tiny-supervised", root / "tiny-supervised")
    shutil.copytree(views_env / "tiny-supervised", root / "simclr-k7-photo-patches")
    ws_model = next(p for p in views_env.iterdir() if p.is_dir() and p.name not in ("tiny-supervised", "tiny-vit"))
    shutil.copytree(ws_model, root / ws_model.name)
    monkeypatch.setenv("SSL_VIZ_MODELS", str(root))
    monkeypatch.setenv("SSL_VIZ_DEFAULT_MODEL", str(root / ws_model.name))
    at = run_page("kernels")
    assert Path(at.selectbox(key="kern_second").value).name == "simclr-k7-photo-patches"
    assert len(at.dataframe) == 2  # both encoders drawn
    shutil.rmtree(root / "simclr-k7-photo-patches")
    assert run_page("kernels").selectbox(key="kern_second").value is None


def test_feature_maps_page(views_env):
    at = run_page("feature_maps")
    assert len(at.image) >= 3  # input, channel grid, top-activating images
    at.slider(key="fm_index").set_value(7)
    at.selectbox(key="fm_layer").select("body.block3")
    at.run()
    assert not at.exception
    at.selectbox(key="fm_channel").select(at.selectbox(key="fm_channel").options[1])
    at.run()
    assert not at.exception and len(at.image) >= 3
    at.radio(key="fm_source").set_value("Upload an image")
    at.run()
    assert not at.exception and at.get("file_uploader")


def test_attention_page(views_env):
    at = run_page("attention")
    assert len(at.image) == 2 * 4 and not at.error and not at.info  # a row per image (4) and model (2)
    # default comparison: the supervised model, side by side
    assert at.selectbox(key="att_second").value == str(views_env / "tiny-supervised")
    for method in ("saliency", "integrated_gradients", "occlusion"):
        at.selectbox(key="att_method").select(method)
        at.run()
        assert not at.exception and not at.error and not at.info, method
    for target in ("image", "prototype"):
        at.selectbox(key="att_target").select(target)
        at.run()
        assert not at.exception and not at.error and not at.info, target
    at.selectbox(key="att_target").select("logit")
    at.run()
    assert not at.exception
    assert len(at.info) == 1 and "no classifier" in at.info[0].value  # the SimCLR model; the supervised one is shown
    assert len(at.image) == 4 and "(class " in at.image[0].proto.imgs[0].caption
    at.text_input(key="att_indices").input("1, x")
    at.run()
    assert not at.exception and at.error


def test_attention_page_vit(views_env, monkeypatch):
    monkeypatch.setenv("SSL_VIZ_DEFAULT_MODEL", str(views_env / "tiny-vit"))
    at = AppTest.from_file("../pages/attention.py", default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error and not at.info
    assert any("rollout" in (img.caption or "") for el in at.image for img in el.proto.imgs)
