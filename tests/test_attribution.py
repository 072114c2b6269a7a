"""Attribution maps and ViT attention: shapes, a toy case with a known answer, no side effects on the model."""

import numpy as np
import pytest
import torch
from torch import nn

from ssl_viz.analysis.attribution import (
    METHODS,
    AttributionError,
    ClassLogitTarget,
    SimilarityTarget,
    attention_rollout,
    attribute,
    augmented_view,
    build_target,
    class_prototype,
    default_gradcam_layer,
    explain_image,
    logit_class,
    vit_attention,
)
from ssl_viz.data import load_dataset
from ssl_viz.encoders import build_encoder, conv_layers


def frozen(module: nn.Module) -> nn.Module:
    """As get_model hands it out: eval mode, no parameter gradients."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def untouched(module: nn.Module, requires_grad: bool = False) -> bool:
    no_hooks = all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in module.modules())
    flags = all(p.requires_grad == requires_grad and p.grad is None for p in module.parameters())
    return no_hooks and flags and not any(m.training for m in module.modules())


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", split="test")


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return frozen(build_encoder("small-cnn", in_channels=1, width=8))


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return frozen(build_encoder("vit-tiny", in_channels=1))


# ----------------------------------------------------------------------------- toy case with a known answer


class QuadrantToy(nn.Module):
    """y = sum of squares of the top-left quadrant; ``layer`` splits the image into a
    top-left channel and a bottom-right channel (so Grad-CAM must weight channel 0 only)."""

    class Split(nn.Module):
        def forward(self, x):
            mask = torch.zeros_like(x)
            mask[..., :4, :4] = 1
            return torch.cat([x * mask, x * (1 - mask)], dim=1)

    def __init__(self):
        super().__init__()
        self.layer = self.Split()

    def forward(self, x):
        a = self.layer(x)
        return (a[:, 0] ** 2).flatten(1).sum(1)


@pytest.mark.parametrize("method", list(METHODS))
def test_toy_mass_in_top_left(method):
    torch.manual_seed(1)
    toy = QuadrantToy().eval()
    x = torch.rand(1, 1, 8, 8) * 0.8 + 0.2
    kw = {"window": 2, "stride": 2} if method == "occlusion" else {}
    a = attribute(method, toy, x, layer=toy.layer, **kw)
    assert a.shape == (8, 8) and np.isfinite(a).all()
    top_left = a[:4, :4].sum() / a.sum()
    assert top_left > 0.95, (method, top_left)
    assert untouched(toy)


def test_ig_completeness_on_toy():
    """Integrated Gradients sums to f(x) - f(black) (Sundararajan et al. 2017, completeness)."""
    toy = QuadrantToy().eval()
    x = torch.rand(1, 1, 8, 8)
    a = attribute("integrated_gradients", toy, x, n_steps=64, sign="all")
    assert a.sum() == pytest.approx(float(toy(x)), rel=1e-2)


# ----------------------------------------------------------------------------- real (tiny) encoders


@pytest.mark.parametrize("method", list(METHODS))
def test_similarity_attribution_small_cnn(cnn, digits, method):
    x = digits.float_images(slice(0, 1))
    with torch.no_grad():
        ref = cnn(digits.float_images(slice(5, 6)))[0]
    layer = conv_layers(cnn)[default_gradcam_layer(cnn, x)]
    a = attribute(method, SimilarityTarget(cnn, ref), x, layer=layer, n_steps=8)
    assert a.shape == (8, 8) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.abs(a).max() > 0
    assert untouched(cnn)


def test_default_gradcam_layer_has_spatial_extent(cnn, digits):
    name = default_gradcam_layer(cnn, digits.float_images(slice(0, 1)))
    assert name == "body.block2.0"  # 8x8 input: block2's conv is 4x4, block3's 2x2, block4's 1x1


def test_attribution_vit_and_grad_flags_restored(vit, digits):
    x = digits.float_images(slice(0, 1))
    with torch.no_grad():
        ref = vit(augmented_view(x, "simclr", seed=3))[0]
    target = SimilarityTarget(vit, ref)
    for method in ("gradcam", "saliency"):
        a = attribute(method, target, x, layer=vit.body.patch_embed)
        assert a.shape == (8, 8) and np.isfinite(a).all() and np.abs(a).max() > 0
    assert untouched(vit)
    # a model whose parameters do require grad keeps them on, and gets no .grad
    enc = build_encoder("small-cnn", in_channels=1, width=4).eval()
    attribute("saliency", SimilarityTarget(enc, torch.randn(32)), x)
    assert untouched(enc, requires_grad=True)


def test_inputs_from_inference_mode(cnn, digits):
    with torch.inference_mode():
        x = digits.float_images(slice(0, 1))
    a = attribute("saliency", SimilarityTarget(cnn, torch.randn(64)), x)
    assert np.abs(a).max() > 0


def test_class_logit_and_prototype(cnn, digits):
    head = frozen(nn.Linear(cnn.feature_dim, 10))
    target = ClassLogitTarget(cnn, head, class_index=3)
    x = digits.float_images(slice(0, 2))
    assert target(x).shape == (2,)
    a = attribute("integrated_gradients", target, x[:1], n_steps=8)
    assert a.shape == (8, 8) and np.abs(a).max() > 0
    assert untouched(cnn) and untouched(head)
    proto = class_prototype(cnn, digits.float_images(digits.labels == 3))
    assert proto.shape == (cnn.feature_dim,)
    with pytest.raises(AttributionError):
        class_prototype(cnn, x[:0])


def test_build_target(cnn, digits):
    x = digits.float_images(slice(0, 1))
    other = digits.float_images(slice(1, 2))
    assert float(build_target("image", cnn, x)(x)) == pytest.approx(1.0, abs=1e-5)
    assert build_target("view", cnn, augmented_view(x, "crop", seed=0))(other).shape == (1,)
    proto = build_target("prototype", cnn, digits.float_images(digits.labels == 0))
    assert -1 <= float(proto(x)) <= 1
    head = frozen(nn.Linear(cnn.feature_dim, 10))
    with torch.no_grad():
        assert float(build_target("logit", cnn, classifier=head, class_index=2)(x)) == pytest.approx(float(head(cnn(x))[0, 2]))
    with pytest.raises(AttributionError, match="classifier"):
        build_target("logit", cnn, class_index=2)
    assert logit_class(cnn, head, x, label=4, num_classes=10) == 4  # a head for this dataset: the image's label
    with torch.no_grad():
        predicted = int(head(cnn(x)).argmax())
    assert logit_class(cnn, head, x, label=4, num_classes=1000) == predicted  # a foreign head: its prediction
    with pytest.raises(AttributionError, match="unknown target"):
        build_target("nope", cnn, x)


def test_bad_inputs(cnn):
    t = SimilarityTarget(cnn, torch.randn(64))
    with pytest.raises(AttributionError, match="one image"):
        attribute("saliency", t, torch.rand(2, 1, 8, 8))
    with pytest.raises(AttributionError, match="unknown method"):
        attribute("lime", t, torch.rand(1, 1, 8, 8))
    with pytest.raises(AttributionError, match="conv layer"):
        attribute("gradcam", t, torch.rand(1, 1, 8, 8))


# ----------------------------------------------------------------------------- ViT attention


def test_vit_attention_shapes(vit, digits):
    x = digits.float_images(slice(0, 1))
    mean, heads = vit_attention(vit, x)
    assert mean.shape == (8, 8) and heads.shape == (3, 8, 8)
    np.testing.assert_allclose(mean, heads.mean(0), rtol=1e-5)
    assert (heads >= 0).all() and heads.sum(axis=(1, 2)).max() <= 1 + 1e-5
    rollout = attention_rollout(vit.attention_maps(x))
    assert rollout.shape == (8, 8) and np.isfinite(rollout).all() and rollout.max() > 0
    assert untouched(vit)


def test_rollout_identity_and_uniform():
    t = 1 + 16
    identity = [torch.eye(t).expand(2, 3, t, t) for _ in range(4)]
    r = attention_rollout(identity)
    assert r.shape == (4, 4) and np.allclose(r, r.flat[0])
    uniform = [torch.full((3, t, t), 1.0 / t) for _ in range(4)]
    r = attention_rollout(uniform)
    assert np.allclose(r, r.flat[0]) and r.flat[0] > 0


def test_rollout_follows_attention_through_layers():
    """[CLS] reads tokens 1, 2 in block 2; both read token 6 in block 1 -> rollout peaks at patch 5 (token 6)."""
    t = 1 + 9
    a1 = torch.eye(t).clone()
    a1[1:3] = 0
    a1[1:3, 6] = 1.0  # tokens 1, 2 (patches 0, 1) copy token 6 (patch 5)
    a2 = torch.eye(t).clone()
    a2[0] = 0
    a2[0, 1:3] = 0.5  # [CLS] reads tokens 1 and 2
    r = attention_rollout([a1[None], a2[None]])
    assert r.shape == (3, 3)
    # R = Â2 Â1 with Â = (A + I) / 2: [CLS] row = 0.5 e0 + 0.25 Â1[1] + 0.25 Â1[2]
    np.testing.assert_allclose(r.ravel(), [0.125, 0.125, 0, 0, 0, 0.25, 0, 0, 0], atol=1e-6)
    r_discard = attention_rollout([a1[None], a2[None]], discard_ratio=0.5)
    assert np.argmax(r_discard) == 5
    with pytest.raises(AttributionError):
        attention_rollout([])


def test_explain_image_for_pages(cnn, vit, digits):
    from types import SimpleNamespace

    x = digits.float_images(slice(0, 1))
    head = frozen(nn.Linear(cnn.feature_dim, 10))
    sup = SimpleNamespace(name="sup", encoder=cnn, classifier=head, embed_fn=lambda rep: cnn)
    e = explain_image(sup, x, "logit", "gradcam", label=int(digits.labels[0]), num_classes=10)
    assert list(e.maps) == ["gradcam"] and e.maps["gradcam"].shape == (8, 8)
    assert e.class_index == int(digits.labels[0]) and np.isfinite(e.score)
    ssl = SimpleNamespace(name="vit", encoder=vit, classifier=None, embed_fn=lambda rep: vit)
    e = explain_image(ssl, x, "view", "saliency", policy="crop", seed=1)
    assert list(e.maps)[:3] == ["saliency", "[CLS] attention, mean of heads", "attention rollout"]
    assert len(e.maps) == 3 + 3 and -1 <= e.score <= 1
    with pytest.raises(AttributionError, match="no classifier"):
        explain_image(ssl, x, "logit", "saliency")
    assert untouched(cnn) and untouched(vit) and untouched(head)
