"""Kernels pictures, filter statistics and feature maps on tiny encoders (digits, CPU)."""

import numpy as np
import pytest
import torch
from torch import nn

from ssl_viz.analysis.feature_maps import (
    FeatureMapError,
    FeatureMapRecorder,
    activation_grid,
    capture_feature_maps,
    channel_order,
    layer_choices,
    load_image,
    resolve_layer,
    stage_layers,
    top_activating,
)
from ssl_viz.analysis.kernels import (
    KernelError,
    conv_filters,
    filter_grid,
    filter_norms,
    filter_norms_figure,
    filter_statistics,
    first_layer_filters,
)
from ssl_viz.data import load_dataset
from ssl_viz.encoders import build_encoder, conv_layers


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return build_encoder("small-cnn", in_channels=1, width=8).eval()


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return build_encoder("vit-tiny", in_channels=1).eval()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", split="test")


def no_hooks(module: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in module.modules())


# ----------------------------------------------------------------------------- kernels


def test_first_layer_filters_gray(cnn):
    filters = first_layer_filters(cnn)
    assert filters.shape == (8, 3, 3, 3) and filters.dtype == np.uint8
    assert (filters[..., 0] == filters[..., 1]).all() and (filters[..., 1] == filters[..., 2]).all()  # gray
    # per-filter min-max: every filter spans 0..255
    assert (filters.reshape(8, -1).min(1) == 0).all() and (filters.reshape(8, -1).max(1) == 255).all()


def test_first_layer_filters_rgb_and_global_scale():
    enc = build_encoder("small-cnn", in_channels=3, width=4)
    with torch.no_grad():
        w = enc.first_conv().weight
        w.zero_()
        w[0, 0] = 1.0  # filter 0: pure red
        w[1, 2] = 0.5  # filter 1: half-strength blue
    per_filter = first_layer_filters(enc, normalize="filter")
    glob = first_layer_filters(enc, normalize="global")
    assert per_filter.shape == (4, 3, 3, 3)
    assert (per_filter[0, ..., 0] == 255).all() and (per_filter[0, ..., 1] == 0).all()
    assert (glob[1, ..., 2] > glob[1, ..., 0]).all()
    assert glob[1, ..., 2].max() < glob[0, ..., 0].max()  # the global scale keeps strengths comparable
    with pytest.raises(KernelError):
        first_layer_filters(enc, normalize="bogus")


def test_conv_filters_by_channel_and_mean(cnn):
    name = "body.block2.0"
    conv = conv_layers(cnn)[name]
    mean = conv_filters(cnn, name)
    one = conv_filters(cnn, name, in_channel=3, signed=False)
    assert mean.shape == one.shape == (conv.out_channels, 3, 3, 3)
    assert mean.dtype == np.uint8
    # gray variant of channel 3 follows the weights' order
    w = conv.weight[0, 3].detach()
    assert np.argmax(one[0, ..., 0]) == int(torch.argmax(w))
    with pytest.raises(KernelError, match="input channel"):
        conv_filters(cnn, name, in_channel=99)
    with pytest.raises(KernelError, match="no conv layer"):
        conv_filters(cnn, "body.nope")


def test_filter_statistics(cnn):
    enc = build_encoder("small-cnn", in_channels=1, width=8)
    with torch.no_grad():
        enc.first_conv().weight[:4].zero_()
    stats = filter_statistics(enc)
    assert list(stats["layer"]) == list(conv_layers(enc))
    first = stats.iloc[0]
    assert first["out_channels"] == 8 and first["in_channels"] == 1 and first["kernel"] == "3x3"
    assert first["near_dead_frac"] == pytest.approx(0.5)
    assert (stats["params"] > 0).all() and (stats["l2_mean"] > 0).all()
    norms = filter_norms(cnn)
    assert len(norms) == sum(c.out_channels for c in conv_layers(cnn).values())
    fig = filter_norms_figure({"a": norms, "b": filter_norms(enc)})
    assert len(fig.data) == 2
    grid = filter_grid(first_layer_filters(cnn), ncols=4, size=24)
    assert grid.ndim == 3 and grid.shape[0] > 24 and grid.dtype == np.uint8


# ----------------------------------------------------------------------------- feature maps


def test_capture_matches_forward_stages(cnn, digits):
    x = digits.float_images(slice(0, 4))
    maps = capture_feature_maps(cnn, x, ["block2", "body.block3.0"])
    with torch.no_grad():
        stages = cnn.forward_stages(x)
    assert torch.allclose(maps["block2"], stages["block2"])
    assert maps["body.block3.0"].shape[:2] == (4, 32)
    assert no_hooks(cnn)


def test_recorder_removes_hooks_on_exception(cnn):
    with pytest.raises(RuntimeError, match="boom"):
        with FeatureMapRecorder(cnn, ["block1", "body.block2.0"]) as rec:
            assert cnn.body.block1._forward_hooks  # registered while open
            cnn(torch.rand(1, 1, 8, 8))
            raise RuntimeError("boom")
    assert "block1" in rec.maps
    assert no_hooks(cnn)
    with pytest.raises(FeatureMapError):
        FeatureMapRecorder(cnn, ["no.such.layer"])
    assert no_hooks(cnn)


def test_recorder_ignores_other_threads(cnn):
    import threading

    with FeatureMapRecorder(cnn, ["block1"]) as rec:
        t = threading.Thread(target=lambda: cnn(torch.rand(1, 1, 8, 8)))
        t.start()
        t.join()
        assert rec.maps == {}
    assert no_hooks(cnn)


def test_layer_choices_and_vit_tokens(cnn, vit):
    assert stage_layers(cnn) == {f"block{i}": f"body.block{i}" for i in range(1, 5)}
    assert "body.block1.0" in layer_choices(cnn)
    assert resolve_layer(cnn, "block3")[0] == "body.block3"
    maps = capture_feature_maps(vit, torch.rand(2, 1, 8, 8), ["blocks.5"])
    assert maps["blocks.5"].shape == (2, 192, 8, 8)  # tokens reshaped to the patch grid, [CLS] dropped
    assert no_hooks(vit)


def test_activation_grid_sorting():
    fmap = torch.zeros(5, 4, 4)
    for c in range(5):
        fmap[c] = c  # channel 4 most active
    fmap[2, 0, 0] = 100.0
    assert list(channel_order(fmap, "mean")) == [2, 4, 3, 1, 0]
    assert list(channel_order(fmap, "index")) == [0, 1, 2, 3, 4]
    grid, order = activation_grid(fmap, max_channels=3, sort_by="mean", ncols=3, size=16)
    assert list(order) == [2, 4, 3]
    assert grid.dtype == np.uint8 and grid.shape == (2 + 16 + 2, 2 + 3 * (16 + 2), 3)
    with pytest.raises(FeatureMapError):
        activation_grid(torch.zeros(4, 4))


def test_top_activating(cnn, digits):
    images = digits.images[:60]
    idx, scores = top_activating(cnn, images, "block2", channel=1, k=5, batch_size=16)
    assert len(idx) == 5 and np.all(np.diff(scores) <= 0)
    maps = capture_feature_maps(cnn, digits.float_images(slice(0, 60)), ["block2"])["block2"]
    expected = maps[:, 1].mean(dim=(1, 2))
    assert int(idx[0]) == int(expected.argmax())
    assert scores[0] == pytest.approx(float(expected.max()), rel=1e-4)
    idx_max, _ = top_activating(cnn, images, "block2", channel=1, k=3, reduce="max")
    assert int(idx_max[0]) == int(maps[:, 1].amax(dim=(1, 2)).argmax())
    with pytest.raises(FeatureMapError, match="channels"):
        top_activating(cnn, images, "block2", channel=999)
    assert no_hooks(cnn)


def test_load_image(tmp_path):
    from PIL import Image

    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[:, :15, 0] = 255
    Image.fromarray(rgb).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", channels=1, size=(8, 8))
    assert x.shape == (1, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    x3 = load_image(tmp_path / "a.png", channels=3)
    assert x3.shape == (1, 3, 20, 30) and x3[0, 0, 0, 0] == 1.0 and x3[0, 1, 0, 0] == 0.0
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(FeatureMapError, match="readable"):
        load_image(tmp_path / "bad.png", channels=1)
