"""diagnose(): label damage (two probes), encoder invariance and kNN / linear accuracy for each single augmentation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ssl_viz.analysis.diagnosis.features import content_mask
from ssl_viz.analysis.diagnosis.probe import FeatureProbe
from ssl_viz.analysis.diagnosis.report import AugmentationReport, Diagnosis, Thresholds, invariance_score, judge, normalised_drop
from ssl_viz.augment import SINGLE_TRANSFORMS, BatchAugment, single_transform
from ssl_viz.data import ImageDataset

Progress = Callable[[float, str], None]


def _float(ds: ImageDataset) -> torch.Tensor:
    return ds.float_images()


@torch.no_grad()
def _embed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)]) if len(x) else torch.empty(0, 0)


def _mean_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float(), b.float(), dim=1).mean())


def diagnose(
    train: ImageDataset,
    test: ImageDataset,
    embed_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    augmentations: Sequence[str] = SINGLE_TRANSFORMS,
    strength: float = 1.0,
    seed: int = 0,
    encoder_name: str | None = None,
    max_invariance_images: int = 500,
    linear: bool = True,
    thresholds: Thresholds = Thresholds(),
    progress: Progress | None = None,
) -> Diagnosis:
    """Diagnose every augmentation in ``augmentations`` for ``train``/``test``'s labels.

    Args:
        train, test: labelled datasets (same label). The probe trains on ``train``; the
            measurements are on ``test``.
        embed_fn: the encoder, images ``[B, C, H, W]`` in [0, 1] -> ``[B, D]`` (e.g.
            ``LoadedModel.embed_fn()``, in eval mode); None skips invariance and kNN/linear.
        augmentations: names of :data:`~ssl_viz.augment.SINGLE_TRANSFORMS`.
        strength: magnitude of each augmentation, see :func:`~ssl_viz.augment.single_transform`.
        seed: seeds the augmentations' draws and the probe's validation split.
        progress: ``progress(fraction, text)`` callback.
    """
    import time

    start = time.perf_counter()
    if not (train.has_labels and test.has_labels):
        raise ValueError(f"{train.name} has no labels: the diagnosis needs a label (or a factor to label by)")
    report = progress or (lambda f, t: None)
    x_tr, x_te = _float(train), _float(test)
    y_tr, y_te = train.labels.long(), test.labels.long()
    k = max(train.num_classes, int(max(y_tr.max(), y_te.max())) + 1)
    chance = float(torch.bincount(y_te, minlength=k).max()) / len(y_te)

    report(0.0, "Training the probe on clean images…")
    probe = FeatureProbe(seed=seed).fit(x_tr, y_tr, num_classes=k)
    X_tr = probe.transform(x_tr)
    acc_clean = probe.score(x_te, y_te)
    rng = torch.Generator().manual_seed(seed)
    pair = torch.randperm(len(x_te), generator=rng)
    pair = torch.where(pair == torch.arange(len(x_te)), (pair + 1) % len(x_te), pair)
    random_gap = float((x_te - x_te[pair]).abs().mean()) or 1.0

    knn = lin = None
    f_te = None
    if embed_fn is not None:
        report(0.05, "Embedding the clean images…")
        from ssl_viz.evaluate import knn_accuracy, linear_probe

        f_tr, f_te = _embed(embed_fn, x_tr), _embed(embed_fn, x_te)
        knn = knn_accuracy(f_tr, y_tr, f_te, y_te)
        if linear:
            with torch.inference_mode(False):  # the probe trains with autograd, also when called under inference mode
                lin = linear_probe(f_tr.clone(), y_tr.clone(), f_te.clone(), y_te.clone())
    n_inv = min(len(x_te), max_invariance_images)
    sim_random = _mean_cos(f_te[:n_inv], f_te[pair[:n_inv] % len(f_te)]) if f_te is not None else None

    rows = []
    for i, name in enumerate(augmentations):
        report(0.1 + 0.9 * i / max(1, len(augmentations)), f"Measuring {name} ({i + 1}/{len(augmentations)})…")
        cfg = single_transform(name, strength)
        aug = BatchAugment(cfg)
        xa_te = aug(x_te, torch.Generator().manual_seed(seed + 1))
        xa_tr = aug(x_tr, torch.Generator().manual_seed(seed + 2))
        m_te = content_mask(cfg, x_te.shape, seed + 1)
        m_tr = content_mask(cfg, x_tr.shape, seed + 2)
        Xa_te, Xa_tr = probe.transform(xa_te, m_te), probe.transform(xa_tr, m_tr)
        p_t = probe.score(None, y_te, features=Xa_te)
        adapted = probe.refit(torch.cat([X_tr, Xa_tr]), torch.cat([y_tr, y_tr]))     # has seen T(train) too
        p_a = adapted.score(None, y_te, features=Xa_te)
        d_c, d_a = normalised_drop(acc_clean, p_t, chance), normalised_drop(acc_clean, p_a, chance)
        change = float((xa_te - x_te).abs().mean()) / random_gap if xa_te.shape == x_te.shape else 1.0
        s_aug = inv = None
        if embed_fn is not None:
            s_aug = _mean_cos(f_te[:n_inv], _embed(embed_fn, xa_te[:n_inv]))
            inv = invariance_score(s_aug, sim_random)
        damage = min(d_c, d_a)
        verdict, text = judge(name, change, acc_clean, p_t, p_a, damage, inv, thresholds, train.label_factor)
        rows.append(AugmentationReport(name, verdict, text, change, acc_clean, p_t, p_a, d_c, d_a, damage, s_aug, sim_random, inv))
    report(1.0, "Done")
    return Diagnosis(
        dataset=train.name, label=train.label_factor, class_names=list(train.class_names), n_train=len(train), n_test=len(test),
        strength=float(strength), seed=int(seed), chance=chance, probe_groups=list(probe.groups_), probe_clean=acc_clean,
        augmentations=rows, encoder=encoder_name, knn_top1=knn, linear_top1=lin, seconds=time.perf_counter() - start,
    )


def knn_top1(embed_fn: Callable[[torch.Tensor], torch.Tensor], train: ImageDataset, test: ImageDataset) -> float:
    """Weighted kNN top-1 accuracy (:func:`ssl_viz.evaluate.knn_accuracy`, its default k and temperature) of
    ``embed_fn``'s embeddings of ``test`` against those of ``train`` as the bank; a fraction in [0, 1]."""
    from ssl_viz.evaluate import knn_accuracy

    return knn_accuracy(_embed(embed_fn, _float(train)), train.labels, _embed(embed_fn, _float(test)), test.labels)
