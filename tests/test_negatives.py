"""Negatives: false-negative rates against brute force and sampling, hardest negatives, debiased loss, per-class bias."""

import itertools
import math

import numpy as np
import pytest
import torch

from ssl_viz.analysis.negatives import (
    batch_hardest_negatives,
    bias_figure,
    class_bias,
    class_counts,
    compare_bias,
    debiased_losses,
    expected_false_negative_rate,
    false_negative_figure,
    false_negative_table,
    hardest_negatives,
    measured_false_negatives,
    probability_any_false_negative,
    sampled_class_bias,
)
from ssl_viz.data import load_dataset


def brute_force(labels: list[int], b: int) -> tuple[float, float]:
    """Average over every batch (every b-subset, equally likely) and every anchor in it."""
    rate, anyone, count = 0.0, 0.0, 0
    for batch in itertools.combinations(range(len(labels)), b):
        for a in batch:
            same = sum(labels[j] == labels[a] for j in batch if j != a)
            rate += same / (b - 1)
            anyone += same > 0
            count += 1
    return rate / count, anyone / count


@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 1, 1, 1, 1, 2], [0, 0, 1, 1, 2, 2, 3, 3]])
@pytest.mark.parametrize("b", [2, 3, 5])
def test_expected_rates_match_enumeration(labels, b):
    counts = np.bincount(labels)
    rate, anyone = brute_force(labels, b)
    assert expected_false_negative_rate(counts) == pytest.approx(rate, abs=1e-12)
    assert probability_any_false_negative(counts, b) == pytest.approx(anyone, abs=1e-12)


def test_rate_formulas():
    counts = [500, 300, 200]
    n = 1000
    assert expected_false_negative_rate(counts) == pytest.approx((500 * 499 + 300 * 299 + 200 * 199) / (n * (n - 1)))
    assert expected_false_negative_rate(counts, replacement=True) == pytest.approx(0.5**2 + 0.3**2 + 0.2**2)
    assert expected_false_negative_rate([100] * 10, replacement=True) == pytest.approx(0.1)
    assert expected_false_negative_rate([100] * 10) < 0.1                            # without replacement: a bit fewer
    # P(>= 1) grows with the batch size towards 1; at B = 2 it equals the rate
    ps = [probability_any_false_negative(counts, b) for b in (2, 4, 16, 64)]
    assert ps == sorted(ps) and ps[0] == pytest.approx(expected_false_negative_rate(counts)) and ps[-1] > 0.999
    assert probability_any_false_negative([1, 1, 1], 3) == 0.0                        # every class once: never
    assert math.isclose(probability_any_false_negative([5], 3), 1.0)
    with pytest.raises(ValueError):
        probability_any_false_negative(counts, 2000)


def test_measured_matches_expected_on_digits():
    y = load_dataset("digits", "train").labels.numpy()
    counts = np.bincount(y)
    for b in (8, 64, 256):
        m = measured_false_negatives(y, b, n_batches=300, seed=1)
        assert m["rate"] == pytest.approx(expected_false_negative_rate(counts), abs=0.01)
        assert m["any"] == pytest.approx(probability_any_false_negative(counts, b), abs=0.03)
        assert m["per_anchor"] == pytest.approx((b - 1) * m["rate"])


def test_false_negative_table_by_classes_and_batch_size():
    y = load_dataset("shapes", "train", n=1200).labels.numpy()                       # 4 balanced classes
    table = false_negative_table(y, batch_sizes=[4, 32, 256, 5000], num_classes=[2, 4], n_batches=100)
    assert set(table["classes"]) == {2, 4}
    assert 5000 not in set(table["batch_size"])                                      # larger than the data: skipped
    for c, part in table.groupby("classes"):
        assert np.allclose(part["expected_rate"], part["expected_rate"].iloc[0])      # independent of B
        assert part["expected_rate"].iloc[0] == pytest.approx(1 / c, abs=0.01)
        assert (part["measured_rate"] - part["expected_rate"]).abs().max() < 0.02
        assert part["expected_any"].is_monotonic_increasing
        assert (part["measured_any"] - part["expected_any"]).abs().max() < 0.05
    assert len(false_negative_figure(table).data) == 2 * 2 * 2                        # classes x panels x (line, markers)


def test_class_counts_skip_unlabelled():
    assert class_counts([0, 2, 2, -1, 2]).tolist() == [1, 0, 3]
    assert class_counts(torch.tensor([1, 1]), num_classes=4).tolist() == [0, 2, 0, 0]
    assert expected_false_negative_rate(class_counts([0, 0, 1, 1])) == pytest.approx(1 / 3)


def test_batch_hardest_negatives_draws_a_seeded_batch_and_embeds_it():
    ds = load_dataset("digits", "test")
    embed = lambda x: x.flatten(1)  # noqa: E731
    pick, hard = batch_hardest_negatives(embed, ds, batch_size=16, k=4, seed=3)
    assert pick.tolist() == torch.randperm(len(ds), generator=torch.Generator().manual_seed(3))[:16].tolist()
    ref = hardest_negatives(ds.float_images(pick).flatten(1), ds.labels[pick], 4)
    assert torch.equal(hard.indices, ref.indices) and torch.equal(hard.same_class, ref.same_class)
    again, _ = batch_hardest_negatives(embed, ds, batch_size=16, k=4, seed=3)
    assert torch.equal(pick, again) and not torch.equal(pick, batch_hardest_negatives(embed, ds, 16, 4, seed=4)[0])


def test_hardest_negatives():
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    hard = hardest_negatives(z, labels, k=2)
    assert hard.indices.shape == (5, 2)
    assert hard.indices[0].tolist() == [1, 4]                                         # itself excluded, most similar first
    assert (hard.similarity[:, 0] >= hard.similarity[:, 1]).all()
    assert hard.same_class[0].tolist() == [True, False]
    assert 0.0 < hard.false_negative_share < 1.0
    assert hardest_negatives(z, None, k=10).indices.shape == (5, 4)                   # k capped at B - 1
    assert not hardest_negatives(z, None).same_class.any()
    with pytest.raises(ValueError):
        hardest_negatives(z[:1])


def test_debiased_losses_and_method_wiring():
    from ssl_viz.config import MethodConfig
    from ssl_viz.encoders import build_encoder
    from ssl_viz.losses import nt_xent
    from ssl_viz.methods import build_method

    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    losses = debiased_losses(z1, z2, 0.5, [0.0, 0.1, 0.2])
    assert losses[0] == pytest.approx(float(nt_xent(z1, z2, 0.5)))
    assert losses[1] == pytest.approx(float(nt_xent(z1, z2, 0.5, tau_plus=0.1)))
    assert len(set(np.round(losses, 6))) == 3
    # SimCLR and MoCo read the class prior from MethodConfig.debiased_tau_plus (CLI --tau-plus)
    x = [torch.rand(8, 1, 16, 16, generator=g) for _ in range(2)]
    for method in ("simclr", "moco"):
        out = {}
        for tau_plus in (0.0, 0.1):
            torch.manual_seed(0)
            m = build_method(method, build_encoder("small-cnn", in_channels=1, width=8),
                             MethodConfig(proj_dim=8, proj_hidden=16, queue_size=32, debiased_tau_plus=tau_plus)).eval()
            out[tau_plus] = float(m(x, torch.arange(8)).loss.detach())
        assert out[0.0] != pytest.approx(out[0.1]), method


def test_class_bias_finds_the_badly_served_class():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(4) * 5
    ytr, yte = torch.arange(400) % 4, torch.arange(200) % 4
    ftr = centres[ytr] + torch.randn(400, 4, generator=g)
    fte = centres[yte] + torch.randn(200, 4, generator=g)
    ftr[ytr == 3] = centres[2] + torch.randn(100, 4, generator=g)                     # class 3 lands on class 2
    fte[yte == 3] = centres[2] + torch.randn(50, 4, generator=g)
    fte[yte == 1] = centres[1] + 0.01 * torch.randn(50, 4, generator=g)                # class 1 collapsed to a point
    df = class_bias(ftr, ytr, fte, yte, ["a", "b", "c", "d"], k=20)
    assert list(df.columns) == ["class", "n_test", "knn_top1", "uniformity", "knn_gap"]
    assert df["n_test"].tolist() == [50] * 4
    worst = df.iloc[:2]["class"].tolist()
    assert set(worst) == {"c", "d"} and df.iloc[-1]["knn_top1"] == 1.0               # c and d are confused, worst first
    unif = df.set_index("class")["uniformity"]
    assert unif["b"] > -0.01 and unif["a"] < unif["b"]                                # collapse: uniformity near 0
    both = compare_bias({"plain": df, "debiased": df})
    assert list(both.columns) == ["class", "plain: knn_top1", "plain: uniformity", "debiased: knn_top1", "debiased: uniformity"]
    assert len(bias_figure({"plain": df, "debiased": df}).data) == 2


def test_sampled_class_bias_indexes_the_splits_labels():
    g = torch.Generator().manual_seed(1)
    ytr, yte = torch.arange(300) % 3, torch.arange(120) % 3
    ftr, fte = torch.eye(3)[ytr] * 4 + torch.randn(300, 3, generator=g), torch.eye(3)[yte] * 4 + torch.randn(120, 3, generator=g)
    tr_idx, te_idx = np.arange(0, 300, 2), np.arange(1, 120, 3)
    got = sampled_class_bias((ftr[tr_idx].numpy(), tr_idx), (fte[te_idx].numpy(), te_idx), ytr, yte, ["a", "b", "c"], k=10)
    ref = class_bias(ftr[tr_idx], ytr[tr_idx], fte[te_idx], yte[te_idx], ["a", "b", "c"], k=10)
    assert got.equals(ref) and got["n_test"].sum() == len(te_idx)
