"""Each loss against a naive, loop-by-loop implementation of its paper's formula."""

import math

import pytest
import torch

from ssl_viz.losses import (
    byol_loss,
    info_nce,
    info_nce_logits,
    nce,
    nce_z_estimate,
    nt_xent,
    nt_xent_logits,
    sinkhorn_knopp,
    swav_loss,
)

BATCH_SIZES = [2, 5, 16]
TEMPERATURES = [0.05, 0.2, 1.0]
ATOL = 1e-5


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


# ----------------------------------------------------------------------------- naive versions


def naive_nt_xent(z1, z2, t, tau_plus=0.0):
    """SimCLR eq. 1 over the 2N views; Chuang et al. 2020 when tau_plus > 0."""
    views = [z1[i] for i in range(len(z1))] + [z2[i] for i in range(len(z2))]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        pos = math.exp(cos(views[i], views[j]) / t)
        negs = [math.exp(cos(views[i], views[k]) / t) for k in range(2 * n) if k not in (i, j)]
        total += naive_debiased(pos, negs, t, tau_plus)
    return total / (2 * n)


def naive_debiased(pos, negs, t, tau_plus):
    """-log pos / (pos + N_g): N_g = sum of negatives, or Chuang et al.'s estimator."""
    if tau_plus == 0.0:
        return -math.log(pos / (pos + sum(negs)))
    m = len(negs)
    ng = (-tau_plus * m * pos + sum(negs)) / (1 - tau_plus)
    ng = max(ng, m * math.exp(-1 / t))
    return -math.log(pos / (pos + ng))


def naive_info_nce(q, k, negatives, t, tau_plus=0.0):
    """negatives(i) -> list of negative key vectors of query i."""
    total = 0.0
    for i in range(len(q)):
        pos = math.exp(cos(q[i], k[i]) / t)
        negs = [math.exp(cos(q[i], n) / t) for n in negatives(i)]
        total += naive_debiased(pos, negs, t, tau_plus)
    return total / len(q)


# ----------------------------------------------------------------------------- NT-Xent


@pytest.mark.parametrize("n", BATCH_SIZES)
@pytest.mark.parametrize("t", TEMPERATURES)
def test_nt_xent_matches_naive(n, t):
    z1, z2 = rand(n, 7), rand(n, 7)
    assert float(nt_xent(z1, z2, t)) == pytest.approx(naive_nt_xent(z1, z2, t), abs=ATOL)


@pytest.mark.parametrize("n", BATCH_SIZES)
@pytest.mark.parametrize("t", TEMPERATURES)
@pytest.mark.parametrize("tau_plus", [0.1, 0.5])
def test_debiased_nt_xent_matches_naive(n, t, tau_plus):
    z1, z2 = rand(n, 7), rand(n, 7)
    assert float(nt_xent(z1, z2, t, tau_plus=tau_plus)) == pytest.approx(naive_nt_xent(z1, z2, t, tau_plus), abs=ATOL)


def test_debiased_clamp_is_active_for_easy_negatives():
    # positives identical, negatives orthogonal-ish at a high temperature: N_g hits its bound
    z = torch.eye(4, dtype=torch.float64)
    assert float(nt_xent(z, z, 1.0, tau_plus=0.5)) == pytest.approx(naive_nt_xent(z, z, 1.0, 0.5), abs=ATOL)


def test_nt_xent_is_invariant_to_scale_and_symmetric():
    z1, z2 = rand(6, 5), rand(6, 5)
    assert float(nt_xent(3 * z1, 0.5 * z2, 0.2)) == pytest.approx(float(nt_xent(z1, z2, 0.2)), abs=1e-10)
    assert float(nt_xent(z2, z1, 0.2)) == pytest.approx(float(nt_xent(z1, z2, 0.2)), abs=1e-10)


def test_nt_xent_logits_layout():
    z1, z2 = rand(5, 4), rand(5, 4)
    logits = nt_xent_logits(z1, z2, 0.5)
    assert logits.shape == (10, 9)
    assert float(logits[0, 0]) == pytest.approx(cos(z1[0], z2[0]) / 0.5)
    assert float(logits[7, 0]) == pytest.approx(cos(z2[2], z1[2]) / 0.5)


@pytest.mark.parametrize("tau_plus", [0.0, 0.3])
def test_nt_xent_local_anchors_against_gathered_candidates(tau_plus):
    """DDP layout: each rank's loss over its anchors, averaged, equals the full-batch loss."""
    world, n = 3, 4
    z1, z2 = rand(world * n, 6), rand(world * n, 6)
    full = nt_xent(z1, z2, 0.2, tau_plus)
    per_rank = [
        nt_xent(z1[r * n:(r + 1) * n], z2[r * n:(r + 1) * n], 0.2, tau_plus, z1_all=z1, z2_all=z2, offset=r * n)
        for r in range(world)
    ]
    assert float(torch.stack(per_rank).mean()) == pytest.approx(float(full), abs=1e-10)


def test_nt_xent_gradcheck():
    z1 = rand(3, 4).requires_grad_()
    z2 = rand(3, 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.3), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.3, tau_plus=0.1), (z1, z2))


def test_losses_run_in_full_precision_for_half_inputs():
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    ref = nt_xent(z1, z2, 0.1)
    half = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.1)
    assert half.dtype == torch.float32
    assert float(half) == pytest.approx(float(ref), abs=0.05)


# ----------------------------------------------------------------------------- InfoNCE


@pytest.mark.parametrize("n", BATCH_SIZES)
@pytest.mark.parametrize("t", TEMPERATURES)
@pytest.mark.parametrize("tau_plus", [0.0, 0.2])
def test_info_nce_shared_negatives_matches_naive(n, t, tau_plus):
    q, k, bank = rand(n, 8), rand(n, 8), rand(11, 8)
    expected = naive_info_nce(q, k, lambda i: list(bank), t, tau_plus)
    assert float(info_nce(q, k, bank, t, tau_plus)) == pytest.approx(expected, abs=ATOL)


@pytest.mark.parametrize("n", BATCH_SIZES)
@pytest.mark.parametrize("t", TEMPERATURES)
def test_info_nce_per_query_negatives_matches_naive(n, t):
    q, k, negs = rand(n, 8), rand(n, 8), rand(n, 6, 8)
    expected = naive_info_nce(q, k, lambda i: list(negs[i]), t)
    assert float(info_nce(q, k, negs, t)) == pytest.approx(expected, abs=ATOL)


@pytest.mark.parametrize("n", BATCH_SIZES)
@pytest.mark.parametrize("t", TEMPERATURES)
def test_info_nce_in_batch_negatives_matches_naive(n, t):
    q, k = rand(n, 8), rand(n, 8)
    expected = naive_info_nce(q, k, lambda i: [k[j] for j in range(n) if j != i], t)
    assert float(info_nce(q, k, None, t)) == pytest.approx(expected, abs=ATOL)


@pytest.mark.parametrize("tau_plus", [0.0, 0.2])
def test_info_nce_negative_mask_drops_keys(tau_plus):
    q, k, bank = rand(5, 8), rand(5, 8), rand(9, 8)
    mask = torch.zeros(5, 9, dtype=torch.bool)
    mask[torch.arange(5), torch.arange(5)] = True           # query i may not use bank row i
    expected = naive_info_nce(q, k, lambda i: [bank[j] for j in range(9) if j != i], 0.2, tau_plus)
    assert float(info_nce(q, k, bank, 0.2, tau_plus, negative_mask=mask)) == pytest.approx(expected, abs=ATOL)


def test_info_nce_logits_layout():
    q, k, bank = rand(4, 3), rand(4, 3), rand(7, 3)
    logits = info_nce_logits(q, k, bank, 0.5)
    assert logits.shape == (4, 8)
    assert float(logits[2, 0]) == pytest.approx(cos(q[2], k[2]) / 0.5)
    assert float(logits[2, 4]) == pytest.approx(cos(q[2], bank[3]) / 0.5)
    with pytest.raises(ValueError):
        info_nce_logits(q, k, rand(2, 2, 2, 3))


# ----------------------------------------------------------------------------- NCE


@pytest.mark.parametrize("n", BATCH_SIZES)
@pytest.mark.parametrize("t", TEMPERATURES)
def test_nce_matches_naive(n, t):
    """InstDisc eq. 5-7 with P(i|v) = exp(s)/Z, P_n = 1/n_data, m noise samples."""
    n_data, m = 50, 7
    pos, neg = rand(n).tanh() / t, rand(n, m).tanh() / t
    z = float(nce_z_estimate(neg, n_data))
    total = 0.0
    for i in range(n):
        p = math.exp(pos[i]) / z
        h = p / (p + m / n_data)
        total -= math.log(h)
        for j in range(m):
            p = math.exp(neg[i, j]) / z
            total -= math.log(1 - p / (p + m / n_data))
    assert float(nce(pos, neg, n_data, z)) == pytest.approx(total / n, abs=ATOL)


def test_nce_z_estimate_is_monte_carlo_partition_function():
    neg = rand(4, 5)
    assert float(nce_z_estimate(neg, 100)) == pytest.approx(100 * float(neg.exp().mean()))


# ----------------------------------------------------------------------------- SwAV


def naive_sinkhorn(scores, eps, iters):
    """Caron et al. 2020, Alg. 1 (no DDP), written out with loops."""
    b, k = scores.shape
    q = [[math.exp(float(scores[i, j]) / eps) for i in range(b)] for j in range(k)]   # K x B
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(iters):
        q = [[v / sum(row) / k for v in row] for row in q]
        col = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] / col[i] / b for i in range(b)] for j in range(k)]
    return torch.tensor([[q[j][i] * b for j in range(k)] for i in range(b)], dtype=torch.float64)


@pytest.mark.parametrize("b", BATCH_SIZES)
@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_sinkhorn_matches_naive_and_is_normalised(b, eps):
    scores = rand(b, 6).tanh()
    q = sinkhorn_knopp(scores, eps, 3)
    torch.testing.assert_close(q, naive_sinkhorn(scores, eps, 3), atol=ATOL, rtol=0)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(b, dtype=torch.float64))


def test_sinkhorn_equipartition():
    b, k = 64, 8
    scores = rand(b, k).tanh() + torch.linspace(0, 0.5, k, dtype=torch.float64)   # biased towards late prototypes
    q = sinkhorn_knopp(scores, 0.05, 500)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(b, dtype=torch.float64))
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), b / k, dtype=torch.float64), atol=1e-3, rtol=0)
    q3 = sinkhorn_knopp(scores, 0.05, 3)                  # the default iterations: roughly equal mass
    assert float(q3.sum(dim=0).std() / (b / k)) < 0.3
    assert not q3.requires_grad


def test_sinkhorn_handles_large_scores():
    q = sinkhorn_knopp(torch.randn(16, 5) * 50, 0.05, 3)
    assert torch.isfinite(q).all()


@pytest.mark.parametrize("b", BATCH_SIZES)
@pytest.mark.parametrize("t", TEMPERATURES)
@pytest.mark.parametrize("num_views", [2, 4])
def test_swav_loss_matches_naive(b, t, num_views):
    k = 5
    scores = [rand(b, k) for _ in range(num_views)]
    codes = [torch.softmax(rand(b, k), dim=1) for _ in range(2)]
    expected = 0.0
    for s, q in enumerate(codes):
        sub = 0.0
        for v in range(num_views):
            if v == s:
                continue
            for i in range(b):
                denom = sum(math.exp(float(scores[v][i, j]) / t) for j in range(k))
                sub -= sum(float(q[i, j]) * math.log(math.exp(float(scores[v][i, j]) / t) / denom) for j in range(k)) / b
        expected += sub / (num_views - 1)
    expected /= len(codes)
    assert float(swav_loss(scores, codes, t)) == pytest.approx(expected, abs=ATOL)


def test_swav_loss_rejects_bad_arguments():
    with pytest.raises(ValueError):
        swav_loss([rand(2, 3)], [rand(2, 3)])


# ----------------------------------------------------------------------------- BYOL


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_byol_loss_is_two_minus_two_cos(n):
    p, z = rand(n, 9), rand(n, 9)
    expected = sum(2 - 2 * cos(p[i], z[i]) for i in range(n)) / n
    assert float(byol_loss(p, z)) == pytest.approx(expected, abs=ATOL)
    # equals the squared distance of the normalised vectors (Grill et al. eq. 2)
    pn, zn = p / p.norm(dim=1, keepdim=True), z / z.norm(dim=1, keepdim=True)
    assert float(byol_loss(p, z)) == pytest.approx(float(((pn - zn) ** 2).sum(dim=1).mean()), abs=ATOL)
    assert float(byol_loss(p, p)) == pytest.approx(0.0, abs=1e-12)
