"""The contrastive-batch view: similarities, per-anchor softmax and losses agree with NT-Xent and a naive loop."""

import math

import numpy as np
import pytest
import torch

from ssl_viz.analysis.pairs import contrastive_batch, contrastive_scores
from ssl_viz.augment import POLICIES, BatchAugment
from ssl_viz.encoders import build_encoder
from ssl_viz.losses import nt_xent


def naive_losses(z: torch.Tensor, t: float) -> list[float]:
    """SimCLR eq. 1 written as loops over anchors and candidates."""
    n2 = len(z)
    n = n2 // 2
    out = []
    for i in range(n2):
        zi = z[i] / z[i].norm()
        sims = [float(zi @ (z[k] / z[k].norm())) for k in range(n2)]
        j = (i + n) % n2
        denom = sum(math.exp(sims[k] / t) for k in range(n2) if k != i)
        out.append(-math.log(math.exp(sims[j] / t) / denom))
    return out


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (5, 8, 0.1), (8, 16, 1.0)])
def test_scores_match_naive_and_mean_equals_nt_xent(n, d, t):
    z = torch.randn(2 * n, d, dtype=torch.float64)
    sim, pos, probs, losses = contrastive_scores(z, t)
    assert sim.shape == probs.shape == (2 * n, 2 * n) and losses.shape == (2 * n,)
    torch.testing.assert_close(sim, sim.T)
    torch.testing.assert_close(sim.diagonal(), torch.ones(2 * n, dtype=sim.dtype))
    assert pos.tolist() == [(i + n) % (2 * n) for i in range(2 * n)]
    torch.testing.assert_close(probs.sum(1), torch.ones(2 * n, dtype=probs.dtype))
    assert (probs.diagonal() == 0).all()
    np.testing.assert_allclose(losses.numpy(), naive_losses(z, t), rtol=1e-6)
    torch.testing.assert_close(losses.mean(), nt_xent(z[:n], z[n:], temperature=t))


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        contrastive_scores(torch.randn(3, 4), 0.5)


def test_contrastive_batch_with_an_encoder_is_reproducible():
    torch.manual_seed(0)
    enc = build_encoder("small-cnn", in_channels=1, width=4).eval()
    images = (torch.rand(6, 1, 16, 16) * 255).to(torch.uint8)
    aug = BatchAugment(POLICIES["simclr"])
    a = contrastive_batch(enc, images, aug, temperature=0.2, seed=7)
    b = contrastive_batch(enc, images, aug, temperature=0.2, seed=7)
    c = contrastive_batch(enc, images, aug, temperature=0.2, seed=8)
    assert a.views.shape == (12, 1, 16, 16) and a.n == 6
    torch.testing.assert_close(a.views, b.views)
    torch.testing.assert_close(a.losses, b.losses)
    assert not torch.equal(a.views, c.views)
    assert set(a.params[0]) >= {"crop", "flip"} and len(a.params) == 2
    assert not torch.equal(a.params[0]["crop"], a.params[1]["crop"])  # the two views draw different crops
    z = a.embeddings
    torch.testing.assert_close(torch.tensor(a.loss), nt_xent(z[:6], z[6:], temperature=0.2).float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.similarity, a.similarity.T)
    assert a.view_label(0) == "1a" and a.view_label(7) == "2b"
    assert not enc.training


def test_identity_views_give_unit_positive_similarity():
    enc = build_encoder("small-cnn", in_channels=1, width=4).eval()
    images = torch.rand(4, 1, 8, 8)
    cb = contrastive_batch(enc, images, None, temperature=0.5)
    assert cb.params == [None, None]
    torch.testing.assert_close(cb.similarity[torch.arange(8), cb.positives], torch.ones(8), atol=1e-5, rtol=0)
