"""diagnose(): label damage (two probes), encoder invariance and kNN / linear accuracy for each single augmentation.

:class:`ProbeBench` holds what every measurement shares (the probe fitted on clean images, the clean
features, the encoder's clean embeddings), so that a dose-response sweep only computes the transformed
images of each (augmentation, strength). Every pass over images runs in batches (bounded memory).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ssl_viz.analysis.diagnosis.features import content_mask, probe_features
from ssl_viz.analysis.diagnosis.probe import FeatureProbe
from ssl_viz.analysis.diagnosis.report import AugmentationReport, Diagnosis, Thresholds, invariance_score, judge, normalised_drop
from ssl_viz.augment import SINGLE_TRANSFORMS, BatchAugment, single_transform
from ssl_viz.config import AugmentConfig
from ssl_viz.data import ImageDataset

Progress = Callable[[float, str], None]
BATCH = 512                     # images per pass (features, augmentation, embeddings)
ADAPT_IMAGES = 600              # transformed training images the adapted probe sees (the first ones of the training set)


def _batches(n: int, size: int = BATCH):
    for b, i in enumerate(range(0, n, size)):
        yield b, slice(i, min(n, i + size))


@torch.no_grad()
def _embed(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Embeddings ``[N, D]`` of uint8 (or float) images ``[N, C, H, W]``, converted to [0, 1] one batch at a time."""
    def as_float(x):
        return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()

    if not len(images):
        return torch.empty(0, 0)
    return torch.cat([fn(as_float(images[i:i + batch_size])).float().cpu() for i in range(0, len(images), batch_size)])


def _mean_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float(), b.float(), dim=1).mean())


def check_sample(train: ImageDataset, test: ImageDataset) -> None:
    """Raise ValueError (one sentence) unless both sets are labelled and the probe can be fitted and scored.

    The probe needs at least two classes and at least 2 training images of every class that occurs
    (it holds a quarter out to choose its features), and at least 2 test images.
    """
    if not (train.has_labels and test.has_labels):
        raise ValueError(f"{train.name} has no labels: the diagnosis needs a label (or a factor to label by)")
    k = max(train.num_classes, int(max(train.labels.max(), test.labels.max())) + 1)
    counts = torch.bincount(train.labels[train.labels >= 0], minlength=k)
    used = (counts > 0) | (torch.bincount(test.labels[test.labels >= 0], minlength=k) > 0)
    names = list(train.class_names) + [str(i) for i in range(len(train.class_names), k)]
    thin = [names[i] for i in range(k) if used[i] and counts[i] < 2]
    if int(used.sum()) < 2 or thin or len(test) < 2:
        why = (f"class {thin[0]!r} has {int(counts[names.index(thin[0])])}" if thin else
               f"{len(test)} test image(s)" if len(test) < 2 else "only one class")
        raise ValueError(f"too few images to diagnose: {len(train)} training images ({why}); the probe needs at least "
                         f"2 training images of every class and 2 test images: use at least {max(20, 10 * k)} training images")


class ProbeBench:
    """What every measurement of one (train, test, encoder) shares, computed once in ``__init__``.

    Attributes: ``probe`` (:class:`FeatureProbe` fitted on clean training images), ``acc_clean``
    (its test accuracy), ``chance`` (majority-class rate of the test set), ``knn`` / ``linear``
    (the encoder's accuracies, None without one). :meth:`measure` returns the
    :class:`AugmentationReport` of one augmentation policy. ``candidate_groups``: the feature groups
    the probe may choose from (default all of :data:`PROBE_GROUPS`). The adapted probe is fitted on
    every clean training image plus the first ``adapt_images`` of them transformed (the training
    images are a random sample already). Raises ValueError via :func:`check_sample`.
    """

    def __init__(self, train: ImageDataset, test: ImageDataset, embed_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 seed: int = 0, linear: bool = True, max_invariance_images: int = 500, batch_size: int = BATCH,
                 progress: Progress | None = None, candidate_groups: Sequence[str] | None = None,
                 adapt_images: int = ADAPT_IMAGES) -> None:
        check_sample(train, test)
        report = progress or (lambda f, t: None)
        self.train, self.test, self.embed_fn, self.seed, self.batch_size = train, test, embed_fn, seed, batch_size
        self.n_adapt = max(1, min(len(train), adapt_images))
        self.label = train.label_factor
        self.y_tr, self.y_te = train.labels.long(), test.labels.long()
        k = max(train.num_classes, int(max(self.y_tr.max(), self.y_te.max())) + 1)
        self.chance = float(torch.bincount(self.y_te, minlength=k).max()) / len(self.y_te)

        report(0.0, "Training the probe on clean images…")
        feats = self._features(train.images, candidate_groups)
        self.probe = FeatureProbe(seed=seed).fit(None, self.y_tr, num_classes=k, features=feats)
        self.X_tr = FeatureProbe._stack(feats, self.probe.groups_)
        rng = torch.Generator().manual_seed(seed)
        pair = torch.randperm(len(test), generator=rng)
        self.pair = torch.where(pair == torch.arange(len(test)), (pair + 1) % len(test), pair)
        gap = sum(float((test.images[sl].float() - test.images[self.pair[sl]].float()).abs().sum()) for _, sl in _batches(len(test)))
        self.random_gap = gap / 255.0 / test.images.numel() or 1.0
        self.X_te = self._transformed(test.images, None, 0)[0]
        self.acc_clean = self.probe.score(None, self.y_te, features=self.X_te)

        self.knn = self.linear = self.f_te = self.sim_random = None
        self.n_inv = min(len(test), max_invariance_images)
        if embed_fn is not None:
            report(0.5, "Embedding the clean images…")
            from ssl_viz.evaluate import knn_accuracy, linear_probe

            f_tr, self.f_te = _embed(embed_fn, train.images), _embed(embed_fn, test.images)
            self.knn = knn_accuracy(f_tr, self.y_tr, self.f_te, self.y_te)
            if linear:
                with torch.inference_mode(False):  # the probe trains with autograd, also when called under inference mode
                    self.linear = linear_probe(f_tr.clone(), self.y_tr.clone(), self.f_te.clone(), self.y_te.clone())
            self.sim_random = _mean_cos(self.f_te[:self.n_inv], self.f_te[self.pair[:self.n_inv] % len(self.f_te)])
        report(1.0, "Probe ready")

    def _features(self, images: torch.Tensor, groups: Sequence[str] | None) -> dict[str, torch.Tensor]:
        """Probe feature groups of clean uint8 ``images [N, C, H, W]``, one batch at a time."""
        parts = [probe_features(images[sl], None, groups) for _, sl in _batches(len(images), self.batch_size)]
        return {g: torch.cat([p[g] for p in parts]) for g in parts[0]}

    @torch.no_grad()
    def _transformed(self, images: torch.Tensor, cfg: AugmentConfig | None, base_seed: int, keep: int = 0,
                     clean: torch.Tensor | None = None) -> tuple[torch.Tensor, float, torch.Tensor | None]:
        """``(features [N, F] of the probe's groups, image change, the first `keep` transformed images or None)``.

        Batch ``b`` is augmented with the generator seed ``base_seed + 7919 b`` (the same draws for every
        policy, so a dose-response compares like with like); padding is masked out (:func:`content_mask`).
        Images the policy left unchanged (e.g. not drawn at probability p) take their row of ``clean``
        (the clean features of ``images``) instead of being recomputed. The image change is
        ``mean |T(x) - x|`` over the random-pair gap (1 when T changes the size).
        """
        aug = None if cfg is None else BatchAugment(cfg)
        feats, kept, diff, same_size = [], [], 0.0, True
        for b, sl in _batches(len(images), self.batch_size):
            x = images[sl].float().div(255.0)
            seed_b = base_seed + 7919 * b
            xa = x if aug is None else aug(x, torch.Generator().manual_seed(seed_b))
            mask = None if cfg is None else content_mask(cfg, x.shape, seed_b)
            if xa.shape == x.shape:
                diff += float((xa - x).abs().sum())
            else:
                same_size = False
            changed = (xa != x).flatten(1).any(1) if clean is not None and mask is None and xa.shape == x.shape else None
            if changed is None or bool(changed.all()):
                feats.append(self.probe.transform(xa, mask))
            else:
                f = clean[sl].clone()
                if bool(changed.any()):
                    f[changed] = self.probe.transform(xa[changed])
                feats.append(f)
            if keep > sl.start:
                kept.append(xa[: keep - sl.start])
        change = diff / images.numel() / self.random_gap if same_size else 1.0
        return torch.cat(feats), change, torch.cat(kept) if kept else None

    def measure(self, name: str, cfg: AugmentConfig, thresholds: Thresholds = Thresholds()) -> AugmentationReport:
        """The report of augmentation ``name`` applied as policy ``cfg`` (label damage, change, invariance, verdict)."""
        keep = self.n_inv if self.embed_fn is not None else 0
        Xa_te, change, xa_inv = self._transformed(self.test.images, cfg, self.seed + 1, keep, self.X_te)
        Xa_tr = self._transformed(self.train.images[:self.n_adapt], cfg, self.seed + 2, clean=self.X_tr[:self.n_adapt])[0]
        p_t = self.probe.score(None, self.y_te, features=Xa_te)
        adapted = self.probe.refit(torch.cat([self.X_tr, Xa_tr]), torch.cat([self.y_tr, self.y_tr[:self.n_adapt]]))  # saw T(x)
        p_a = adapted.score(None, self.y_te, features=Xa_te)
        d_c, d_a = normalised_drop(self.acc_clean, p_t, self.chance), normalised_drop(self.acc_clean, p_a, self.chance)
        s_aug = inv = None
        if self.embed_fn is not None:
            s_aug = _mean_cos(self.f_te[:self.n_inv], _embed(self.embed_fn, xa_inv))
            inv = invariance_score(s_aug, self.sim_random)
        damage = min(d_c, d_a)
        verdict, text = judge(name, change, self.acc_clean, p_t, p_a, damage, inv, thresholds, self.label)
        return AugmentationReport(name, verdict, text, change, self.acc_clean, p_t, p_a, d_c, d_a, damage, s_aug, self.sim_random, inv)


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
    """Diagnose every augmentation in ``augmentations`` for ``train``/``test``'s labels at one strength.

    Args:
        train, test: labelled datasets (same label). The probe trains on ``train``; the
            measurements are on ``test``.
        embed_fn: the encoder, images ``[B, C, H, W]`` in [0, 1] -> ``[B, D]`` (e.g.
            ``LoadedModel.embed_fn()``, in eval mode); None skips invariance and kNN/linear.
        augmentations: names of :data:`~ssl_viz.augment.SINGLE_TRANSFORMS`.
        strength: magnitude of each augmentation, see :func:`~ssl_viz.augment.single_transform`
            (every augmentation is applied to every image; :func:`dose_response` sweeps strengths).
        seed: seeds the augmentations' draws and the probe's validation split.
        progress: ``progress(fraction, text)`` callback.

    Raises ValueError for unlabelled data or a sample too small for the probe (:func:`check_sample`).
    """
    start = time.perf_counter()
    report = progress or (lambda f, t: None)
    bench = ProbeBench(train, test, embed_fn, seed=seed, linear=linear, max_invariance_images=max_invariance_images,
                       progress=lambda f, t: report(0.1 * f, t))
    rows = []
    for i, name in enumerate(augmentations):
        report(0.1 + 0.9 * i / max(1, len(augmentations)), f"Measuring {name} ({i + 1}/{len(augmentations)})…")
        rows.append(bench.measure(name, single_transform(name, strength), thresholds))
    report(1.0, "Done")
    return Diagnosis(
        dataset=train.name, label=train.label_factor, class_names=list(train.class_names), n_train=len(train), n_test=len(test),
        strength=float(strength), seed=int(seed), chance=bench.chance, probe_groups=list(bench.probe.groups_),
        probe_clean=bench.acc_clean, augmentations=rows, encoder=encoder_name, knn_top1=bench.knn, linear_top1=bench.linear,
        seconds=time.perf_counter() - start,
    )


def knn_top1(embed_fn: Callable[[torch.Tensor], torch.Tensor], train: ImageDataset, test: ImageDataset) -> float:
    """Weighted kNN top-1 accuracy (:func:`ssl_viz.evaluate.knn_accuracy`, its default k and temperature) of
    ``embed_fn``'s embeddings of ``test`` against those of ``train`` as the bank; a fraction in [0, 1].
    Images are converted and embedded one batch at a time."""
    from ssl_viz.evaluate import knn_accuracy

    with torch.no_grad():
        return knn_accuracy(_embed(embed_fn, train.images), train.labels, _embed(embed_fn, test.images), test.labels)
