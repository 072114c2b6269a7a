"""Is an augmentation a good pretext for this label? Label damage, encoder invariance and its consequence.

A contrastive encoder is trained to be invariant to its augmentations: ``f(x) ~ f(T(x))``.
That is only harmless when ``T`` keeps what defines the label (rotating an
orientation-labelled texture turns class 0 deg into 90 deg; grayscale erases the
colour of colour-labelled shapes). For each single augmentation of the taxonomy
(:data:`ssl_viz.augment.SINGLE_TRANSFORMS`) this module measures:

1. **Label damage, in the data** (no encoder involved): a cheap probe, a ridge
   classifier on a fixed feature bank (:class:`FeatureProbe`), is trained on clean
   images and evaluated on transformed test images (``probe_transformed``). A drop can
   mean "T changes the label" or merely "T makes images the probe never saw", so a
   second probe with the same features is trained on clean + transformed training
   images (``probe_adapted``): if even it cannot read the label from ``T(x)``, the
   label-relevant information is gone. Each drop is normalised by the clean accuracy
   above chance, and the label damage is the smaller of the two::

       damage = min(drop_clean, drop_adapted),  drop = (acc_clean - acc_T) / (acc_clean - chance)

2. **Invariance of the encoder**: ``s_aug = E cos(f(x), f(T(x)))`` against random pairs
   ``s_rand = E cos(f(x), f(x'))``, reported as ``(s_aug - s_rand) / (1 - s_rand)``
   (1: f ignores T; 0: T moves f(x) as far as a random other image).
3. **Consequence**: kNN / linear accuracy of the encoder on the clean test set, and an
   optional ablation sweep (short training runs with each augmentation added or
   removed, see :func:`ablation_configs`, :func:`launch_ablation`, :func:`run_ablation`).

The verdict per augmentation is driven by label damage (``harmful`` / ``neutral`` /
``suitable``; ``neutral`` also when T hardly changes the images); the invariance is
context. Everything returns data or plotly figures and never calls Streamlit.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ssl_viz.augment import POLICIES, SINGLE_TRANSFORMS, BatchAugment, parse_policy, policy_to_spec, single_transform
from ssl_viz.config import AugmentConfig, TrainConfig
from ssl_viz.data import ImageDataset

Progress = Callable[[float, str], None]

PROBE_GROUPS = ("pixels", "intensity", "color", "orientation", "isotropic", "layout", "random-conv")
VERDICTS = ("harmful", "neutral", "suitable")
VERDICT_COLORS = {"harmful": "#d62728", "neutral": "#9aa5b1", "suitable": "#2ca02c"}


@dataclass(frozen=True)
class Thresholds:
    """Verdict rules. ``damage`` is the normalised label damage in [0, 1], ``change`` the image change."""

    harmful: float = 0.3        # damage >= this: harmful
    suitable: float = 0.1       # damage <= this (and the images change): suitable
    min_change: float = 0.03    # image change below this: the augmentation does (almost) nothing here
    invariant: float = 0.7      # invariance score above this: "already invariant"
    sensitive: float = 0.3      # below this: "not invariant"


# ----------------------------------------------------------------------------- the probe's fixed features

_LUMA = (0.2989, 0.587, 0.114)
_N_ORIENT = 8
_GABOR_WAVELENGTH = 4.0        # pixels, at every level of a 3-level pyramid: 4, 8, 16 px at full resolution
_RANDOM_FILTERS = 48


def _masked_mean(v: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """``v [N, K, H, W]``, mask ``m [N, 1, H, W]`` (None: every pixel) -> ``[N, K]``."""
    if m is None:
        return v.mean((2, 3))
    return (v * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1.0)


def _histogram(v: torch.Tensor, m: torch.Tensor | None, bins: int, lo: float, hi: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Masked (optionally weighted) histogram of ``v [N, 1, H, W]`` -> ``[N, bins]``, as a fraction of valid pixels."""
    idx = ((v - lo) / (hi - lo) * bins).long().clamp(0, bins - 1).flatten(1)
    w = torch.ones_like(v) if m is None else m.expand_as(v)
    w = (w if weight is None else w * weight).flatten(1)
    hist = torch.zeros(v.shape[0], bins, dtype=v.dtype).scatter_add_(1, idx, w)
    valid = float(idx.shape[1]) if m is None else m.flatten(1).sum(1, keepdim=True).clamp_min(1.0)
    return hist / valid


def _standardize(v: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """Per-image zero mean, unit variance over the valid pixels (all channels together); 0 outside the mask."""
    mu = _masked_mean(v.mean(1, keepdim=True), m)[:, :, None, None]
    sd = _masked_mean((v - mu).pow(2).mean(1, keepdim=True), m).sqrt()[:, :, None, None].clamp_min(1e-3)
    out = (v - mu) / sd
    return out if m is None else out * m


def _pooled(v: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``v [N, K, H, W]`` over each image quadrant (valid pixels only): ``[N, K, 2, 2]``."""
    if m is None:
        return F.adaptive_avg_pool2d(v, 2)
    return F.adaptive_avg_pool2d(v * m, 2) / F.adaptive_avg_pool2d(m, 2).clamp_min(1e-3)


def gabor_bank(wavelength: float = _GABOR_WAVELENGTH, n_orient: int = _N_ORIENT) -> torch.Tensor:
    """Even/odd Gabor pairs ``[2 * n_orient, 1, k, k]`` (unit norm, even ones zero-mean).

    Pair ``i`` responds to stripes running at ``180 i / n_orient`` degrees counter-clockwise.
    """
    sigma = 0.45 * wavelength
    k = 2 * math.ceil(2 * sigma) + 1
    r = torch.arange(k, dtype=torch.float32) - k // 2
    yy, xx = torch.meshgrid(-r, r, indexing="ij")                      # y up
    env = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    filters = []
    for i in range(n_orient):
        th = math.pi * i / n_orient
        u = -xx * math.sin(th) + yy * math.cos(th)                      # across stripes running at th
        even = env * torch.cos(2 * math.pi * u / wavelength)
        even = even - even.mean()
        odd = env * torch.sin(2 * math.pi * u / wavelength)
        filters += [even / even.norm(), odd / odd.norm()]
    return torch.stack(filters)[:, None]


def _random_filters(seed: int = 0) -> torch.Tensor:
    """A fixed bank of zero-mean, unit-norm random 5x5 filters ``[48, 1, 5, 5]``."""
    k = torch.randn(_RANDOM_FILTERS, 1, 5, 5, generator=torch.Generator().manual_seed(seed))
    k = k - k.mean((1, 2, 3), keepdim=True)
    return k / k.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


_BANKS: dict[str, torch.Tensor] = {}


def _bank(name: str) -> torch.Tensor:
    if name not in _BANKS:
        _BANKS[name] = gabor_bank() if name == "gabor" else _random_filters()
    return _BANKS[name]


@torch.no_grad()
def probe_features(x: torch.Tensor, mask: torch.Tensor | None = None, groups: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The probe's fixed, encoder-independent features, by group.

    Args:
        x: ``[N, C, H, W]`` float in [0, 1] (uint8 is converted), C in {1, 3}.
        mask: ``[N, 1, H, W]`` 1 where a pixel is image content, 0 where it is padding
            (e.g. the corners a free rotation fills with zeros); None: all content.
        groups: which of :data:`PROBE_GROUPS` to compute (default all; ``colour`` only for RGB).

    Groups (every spatial pooling is over the mask; luma and images are standardised per image,
    so global brightness and contrast do not move the structural features):

    * ``pixels``: the standardised image average-pooled to 8x8 (per channel);
    * ``intensity``: 16-bin histogram of the standardised luma;
    * ``colour``: chroma-weighted 12-bin hue histogram (YIQ hue angle), mean chroma / luma,
      mean chromaticity ``rgb / (r + g + b)``; brightness-invariant, erased by grayscale;
    * ``orientation``: Gabor energy of the luma in 8 orientations x 3 scales (a pyramid),
      as a distribution over orientations per scale, plus log total energy per scale;
    * ``isotropic``: the rotation-invariant part of that: |DFT| over orientation and log energy per scale;
    * ``layout``: log Gabor energy per orientation and scale in each image quadrant;
    * ``random-conv``: mean and std of ReLU responses of 48 fixed random 5x5 filters on the luma.
    """
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    n, c, h, w = x.shape
    m = None if mask is None or bool(mask.all()) else mask.float()
    if min(h, w) < 16:  # tiny images (digits 8x8): upsample so the filters fit
        size = (round(h * 16 / min(h, w)), round(w * 16 / min(h, w)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if m is not None:
            m = (F.interpolate(m, size=size, mode="bilinear", align_corners=False) > 0.99).float()
        h, w = size
    want = set(groups or PROBE_GROUPS)
    out: dict[str, torch.Tensor] = {}
    gray = (x * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True) if c == 3 else x.mean(1, keepdim=True)
    gs = _standardize(gray, m)
    if "pixels" in want:
        out["pixels"] = F.adaptive_avg_pool2d(_standardize(x, m), (8, 8)).flatten(1)
    if "intensity" in want:
        out["intensity"] = _histogram(gs, m, 16, -2.5, 2.5)
    if "color" in want and c == 3:
        i_ = 0.596 * x[:, 0] - 0.274 * x[:, 1] - 0.322 * x[:, 2]
        q_ = 0.211 * x[:, 0] - 0.523 * x[:, 1] + 0.312 * x[:, 2]
        chroma = torch.sqrt(i_**2 + q_**2)[:, None]
        hue = _histogram(torch.atan2(q_, i_)[:, None], m, 12, -math.pi, math.pi, chroma)
        rel = _masked_mean(chroma, m) / _masked_mean(gray, m).clamp_min(1e-3)
        chromaticity = _masked_mean(x / x.sum(1, keepdim=True).clamp_min(1e-3), m)
        out["color"] = torch.cat([hue / hue.sum(1, keepdim=True).clamp_min(1e-6), rel, chromaticity], 1)
    if want & {"orientation", "isotropic", "layout"}:
        bank = _bank("gabor")
        glob, quad = [], []
        level, lm = gs, m
        for _ in range(3):
            resp = F.conv2d(level, bank, padding=bank.shape[-1] // 2)
            energy = resp.pow(2).view(n, _N_ORIENT, 2, *resp.shape[-2:]).sum(2)          # [N, O, h, w]
            glob.append(_masked_mean(energy, lm))
            quad.append(_pooled(energy, lm))
            if min(level.shape[-2:]) < 8:
                break
            level, lm = F.avg_pool2d(level, 2), None if lm is None else (F.avg_pool2d(lm, 2) > 0.99).float()
        energy = torch.stack(glob, 1)                                                   # [N, S, O]
        dist = energy / energy.sum(2, keepdim=True).clamp_min(1e-8)
        log_total = torch.log(energy.mean(2) + 1e-4)                                    # [N, S]
        if "orientation" in want:
            out["orientation"] = torch.cat([dist.flatten(1), log_total], 1)
        if "isotropic" in want:
            out["isotropic"] = torch.cat([torch.fft.rfft(dist, dim=2).abs()[:, :, 1:].flatten(1), log_total], 1)
        if "layout" in want:
            out["layout"] = torch.log(torch.cat([q.flatten(1) for q in quad], 1) + 1e-4)
    if "random-conv" in want:
        rc = F.relu(F.conv2d(gs, _bank("random"), padding=2))
        mu = _masked_mean(rc, m)
        out["random-conv"] = torch.cat([mu, (_masked_mean(rc.pow(2), m) - mu.pow(2)).clamp_min(0).sqrt()], 1)
    return out


def content_mask(cfg: AugmentConfig, shape: Sequence[int], seed: int) -> torch.Tensor | None:
    """Which pixels of ``BatchAugment(cfg)(x, Generator().manual_seed(seed))`` are image content: ``[N, 1, H', W']``.

    The geometric part of ``cfg`` is replayed on an all-ones image with the same seed (geometry
    draws its parameters first, so the draws match); pixels that come out below 1 are padding.
    None when the policy cannot pad (no free rotation).
    """
    if cfg.rotation_degrees <= 0:
        return None
    geo = replace(POLICIES["none"], flip_p=cfg.flip_p, crop_scale=cfg.crop_scale, crop_ratio=cfg.crop_ratio,
                  rotation_degrees=cfg.rotation_degrees, rotate90_p=cfg.rotate90_p, out_size=cfg.out_size)
    ones = torch.ones(shape[0], 1, *shape[2:])
    return (BatchAugment(geo)(ones, torch.Generator().manual_seed(seed)) > 0.99).float()


class FeatureProbe:
    """A ridge classifier on :func:`probe_features`, with the feature groups chosen on held-out clean data.

    ``fit`` picks groups greedily (forward selection on a 25% validation split, a group is
    kept if it adds at least ``tolerance`` accuracy), so the probe reads only what the label
    needs; that keeps it from being thrown by changes in information the label does not use.

    Attributes (set by ``fit``): ``groups_``, ``validation_accuracy_``, ``num_classes_``.
    """

    def __init__(self, groups: Sequence[str] | None = None, ridge: float = 1e-3, tolerance: float = 0.01, seed: int = 0) -> None:
        self.groups, self.ridge, self.tolerance, self.seed = groups, ridge, tolerance, seed

    # -- the linear model
    def _solve(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, sd = X.mean(0), X.std(0).clamp_min(1e-6)
        Z = torch.cat([(X - mu) / sd, torch.ones(len(X), 1)], 1).double()
        Y = F.one_hot(y.long(), self.num_classes_).double()
        A = Z.T @ Z + self.ridge * len(X) * torch.eye(Z.shape[1], dtype=torch.float64)
        return mu, sd, torch.linalg.solve(A, Z.T @ Y)

    @staticmethod
    def _predict(params, X: torch.Tensor) -> torch.Tensor:
        mu, sd, W = params
        return (torch.cat([(X - mu) / sd, torch.ones(len(X), 1)], 1).double() @ W).argmax(1)

    @staticmethod
    def _stack(feats: dict[str, torch.Tensor], groups: Sequence[str]) -> torch.Tensor:
        return torch.cat([feats[g] for g in groups], 1)

    def _select(self, feats: dict[str, torch.Tensor], y: torch.Tensor) -> tuple[list[str], float]:
        n = len(y)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        va, tr = perm[: max(1, n // 4)], perm[max(1, n // 4):]
        chosen: list[str] = []
        best = 0.0
        while True:
            scores = {}
            for g in feats:
                if g in chosen:
                    continue
                X = self._stack(feats, chosen + [g])
                scores[g] = float((self._predict(self._solve(X[tr], y[tr]), X[va]) == y[va]).float().mean())
            if not scores:
                break
            g, s = max(scores.items(), key=lambda kv: kv[1])
            if chosen and s < best + self.tolerance:
                break
            chosen.append(g)
            best = s
        return chosen, best

    # -- public API
    def fit(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, num_classes: int | None = None,
            features: dict[str, torch.Tensor] | None = None) -> FeatureProbe:
        """Fit on images ``x [N, C, H, W]`` with labels ``y [N]`` (or precomputed ``features``)."""
        y = torch.as_tensor(y).long()
        self.num_classes_ = int(num_classes or int(y.max()) + 1)
        feats = features if features is not None else probe_features(x, mask, self.groups)
        if self.groups is None:
            self.groups_, self.validation_accuracy_ = self._select(feats, y)
        else:
            self.groups_, self.validation_accuracy_ = [g for g in self.groups if g in feats], float("nan")
        self.params_ = self._solve(self._stack(feats, self.groups_), y)
        return self

    def refit(self, X: torch.Tensor, y: torch.Tensor) -> FeatureProbe:
        """A new probe with this one's groups, fitted on a stacked feature matrix ``X [N, F]`` of them."""
        other = copy.copy(self)
        other.params_ = self._solve(X, torch.as_tensor(y).long())
        return other

    def transform(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The stacked features of the chosen groups ``[N, F]``."""
        return self._stack(probe_features(x, mask, self.groups_), self.groups_)

    def predict(self, x: torch.Tensor, mask: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        return self._predict(self.params_, self.transform(x, mask) if features is None else features)

    def score(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, features: torch.Tensor | None = None) -> float:
        return float((self.predict(x, mask, features) == torch.as_tensor(y).long()).float().mean())


# ----------------------------------------------------------------------------- results


@dataclass
class AugmentationReport:
    """Measurements and verdict for one augmentation (see the module docstring for the formulas)."""

    name: str
    verdict: str
    explanation: str
    image_change: float                 # mean |T(x) - x| / mean |x - x'| (x' a random other image)
    probe_clean: float                  # clean-trained probe on clean test images
    probe_transformed: float            # clean-trained probe on T(test images)
    probe_adapted: float                # probe trained on clean + T(train), on T(test)
    drop_clean: float                   # normalised drops in [0, 1]
    drop_adapted: float
    label_damage: float                 # min(drop_clean, drop_adapted)
    sim_aug: float | None = None        # E cos(f(x), f(T(x)))
    sim_random: float | None = None     # E cos(f(x), f(x'))
    invariance: float | None = None     # (sim_aug - sim_random) / (1 - sim_random)
    ablation_delta: float | None = None  # kNN accuracy change of a short training run with / without it


@dataclass
class Diagnosis:
    """The diagnosis of every augmentation for one (dataset, label, encoder)."""

    dataset: str
    label: str | None
    class_names: list[str]
    n_train: int
    n_test: int
    strength: float
    seed: int
    chance: float
    probe_groups: list[str]
    probe_clean: float
    augmentations: list[AugmentationReport]
    encoder: str | None = None
    knn_top1: float | None = None
    linear_top1: float | None = None
    ablation: dict = field(default_factory=dict)
    seconds: float = 0.0

    def get(self, name: str) -> AugmentationReport:
        for a in self.augmentations:
            if a.name == name:
                return a
        raise KeyError(name)

    @property
    def verdicts(self) -> dict[str, str]:
        return {a.name: a.verdict for a in self.augmentations}

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self):
        """One row per augmentation (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame([asdict(a) for a in self.augmentations])

    def to_csv(self) -> str:
        rows = [asdict(a) for a in self.augmentations]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["name"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
        return buf.getvalue()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return None if math.isnan(obj) else round(obj, 4)
    if isinstance(obj, (np.floating, np.integer)):
        return _jsonable(obj.item())
    return obj


def normalised_drop(reference: float, value: float, chance: float) -> float:
    """``(reference - value) / (reference - chance)`` clipped to [0, 1] (0 when the reference is at chance)."""
    span = reference - chance
    if span <= 1e-6:
        return 0.0
    return float(min(1.0, max(0.0, (reference - value) / span)))


def invariance_score(sim_aug: float, sim_random: float) -> float:
    """``(s_aug - s_rand) / (1 - s_rand)``: 1 if f ignores T, 0 if T moves f(x) like a random other image."""
    return float((sim_aug - sim_random) / max(1e-6, 1.0 - sim_random))


def judge(name: str, change: float, probe_clean: float, probe_transformed: float, probe_adapted: float, damage: float,
          invariance: float | None = None, thresholds: Thresholds = Thresholds(), label: str | None = None) -> tuple[str, str]:
    """(verdict, one-sentence explanation) from the measured numbers; label damage decides."""
    t = thresholds
    classes = f"{label} classes" if label else "classes"
    numbers = f"probe accuracy drops from {probe_clean:.2f} to {probe_transformed:.2f} (to {probe_adapted:.2f} for a probe that has seen it)"
    if change < t.min_change:
        verdict = "neutral"
        text = f"{name} hardly changes these images (change {change:.2f} of a random pair's), so it adds no variation to learn from."
    elif damage >= t.harmful:
        verdict = "harmful"
        text = f"{name} changes or erases the label: {numbers}; an encoder made invariant to it cannot tell the {classes} apart."
    elif damage <= t.suitable:
        verdict = "suitable"
        if probe_transformed < probe_clean - 0.1:
            text = (f"{name} keeps the label: a clean-trained probe is thrown ({probe_clean:.2f} -> {probe_transformed:.2f}) "
                    f"but one that has seen it reads the label again ({probe_adapted:.2f}); invariance to it is safe and adds variation.")
        else:
            text = f"{name} keeps the label ({probe_clean:.2f} -> {probe_transformed:.2f}) while changing the images: invariance to it is safe."
    else:
        verdict = "neutral"
        text = f"{name} partly damages the label: {numbers}; use it weakly or with a low probability."
    if invariance is not None:
        if invariance >= t.invariant:
            text += f" Your encoder is already invariant to it (score {invariance:.2f})."
        elif invariance <= t.sensitive:
            text += f" Your encoder is not invariant to it (score {invariance:.2f})."
        else:
            text += f" Your encoder is partly invariant to it (score {invariance:.2f})."
    return verdict, text


# ----------------------------------------------------------------------------- the diagnosis


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


def diagnosis_figure(diag: Diagnosis):
    """Plotly figure: label damage per augmentation (bars coloured by verdict, thresholds dashed) and,
    when an encoder was measured, its invariance score (diamonds) on the same axis."""
    import plotly.graph_objects as go

    names = [a.name for a in diag.augmentations]
    fig = go.Figure()
    for verdict in VERDICTS:
        rows = [a for a in diag.augmentations if a.verdict == verdict]
        if rows:
            fig.add_bar(x=[a.name for a in rows], y=[a.label_damage for a in rows], name=f"label damage: {verdict}",
                        marker_color=VERDICT_COLORS[verdict],
                        customdata=[[a.probe_transformed, a.probe_adapted] for a in rows],
                        hovertemplate="%{x}<br>damage %{y:.2f}<br>probe on T(x) %{customdata[0]:.2f}, adapted %{customdata[1]:.2f}<extra></extra>")
    inv = [a.invariance for a in diag.augmentations]
    if any(v is not None for v in inv):  # below 0 (T moves f(x) further than a random image) is drawn at 0, open
        shown = [None if v is None else max(0.0, v) for v in inv]
        symbols = ["diamond-open" if v is not None and v < 0 else "diamond" for v in inv]
        fig.add_scatter(x=names, y=shown, mode="markers", name="encoder invariance", customdata=inv,
                        marker=dict(symbol=symbols, size=11, color="#1f77b4", line=dict(width=2, color="#1f77b4")),
                        hovertemplate="%{x}<br>invariance %{customdata:.2f}<extra></extra>")
    t = Thresholds()
    fig.add_hline(y=t.harmful, line_dash="dash", line_color=VERDICT_COLORS["harmful"], annotation_text="harmful")
    fig.add_hline(y=t.suitable, line_dash="dot", line_color=VERDICT_COLORS["suitable"], annotation_text="suitable")
    label = diag.label or "label"
    fig.update_layout(barmode="overlay", height=380, margin=dict(l=10, r=10, t=40, b=10), yaxis_range=[-0.05, 1.05],
                      title=f"{diag.dataset} labelled by {label}: label damage (0 keeps, 1 destroys) and encoder invariance",
                      xaxis=dict(categoryorder="array", categoryarray=names), legend=dict(orientation="h", y=-0.2))
    return fig


# ----------------------------------------------------------------------------- ablation sweep


_IDENTITY = POLICIES["none"]
_FIELDS_OF = {name: [f for f in AugmentConfig.__dataclass_fields__ if getattr(single_transform(name), f) != getattr(_IDENTITY, f)]
              for name in SINGLE_TRANSFORMS}


def ablation_policy(base: str, name: str, mode: str, p: float = 0.5, strength: float = 1.0) -> str:
    """The policy spec of ``base`` with augmentation ``name`` added (with probability ``p``) or removed.

    ``mode="add"`` sets the fields of :func:`single_transform(name) <ssl_viz.augment.single_transform>`
    (probabilities 1 become ``p``; crop, blur and cutout get a range up to that magnitude, as in
    SimCLR's recipe); ``mode="remove"`` resets them to the identity policy's ("off").
    """
    cfg = parse_policy(base)
    single = single_transform(name, strength)
    changes = {}
    for f in _FIELDS_OF[name]:
        if mode == "remove":
            changes[f] = getattr(_IDENTITY, f)
        elif mode == "add":
            value = getattr(single, f)
            changes[f] = p if f.endswith("_p") and value == 1.0 else value
        else:
            raise ValueError(f"mode must be 'add' or 'remove', got {mode!r}")
    if mode == "add":
        ranges = {"crop_scale": (single.crop_scale[0], 1.0), "blur_sigma": (0.1, max(0.1, single.blur_sigma[1])),
                  "cutout_scale": (0.02, max(0.02, single.cutout_scale[1]))}
        changes.update({f: v for f, v in ranges.items() if f in changes})
    return policy_to_spec(replace(cfg, **changes))


def ablation_configs(base: TrainConfig, names: Sequence[str], mode: str = "add", budget: float = 60.0, p: float = 0.5) -> dict[str, TrainConfig]:
    """One short run per augmentation plus ``"baseline"`` (the base policy), each ``budget`` seconds."""
    runs = {"baseline": replace(base, time_budget=budget)}
    for name in names:
        runs[name] = replace(base, augment=ablation_policy(base.augment, name, mode, p), time_budget=budget)
    return runs


def launch_ablation(base: TrainConfig, names: Sequence[str], mode: str = "add", budget: float = 60.0, p: float = 0.5,
                    root: str | Path | None = None, manifest: str | Path | None = None) -> dict[str, Path]:
    """Queue the sweep as background ``python -m ssl_viz train`` runs (:func:`ssl_viz.jobs.start_run`).

    The runs join the app's run queue (``$SSL_VIZ_MAX_RUNS`` at a time, default 1), so they
    also show on the Runs page. Returns ``{name: run directory}`` (``"baseline"`` included)
    and, with ``manifest``, writes it there as JSON for :func:`load_sweep`. Read the results
    with :func:`ablation_results`; unfinished runs read as None.
    """
    from ssl_viz.jobs import start_run

    dirs = {name: start_run(cfg, root) for name, cfg in ablation_configs(base, names, mode, budget, p).items()}
    if manifest is not None:
        Path(manifest).parent.mkdir(parents=True, exist_ok=True)
        Path(manifest).write_text(json.dumps({"mode": mode, "budget": budget, "dataset": base.dataset, "label": base.dataset_label,
                                              "augment": base.augment, "runs": {k: str(v) for k, v in dirs.items()}}, indent=2))
    return dirs


def load_sweep(manifest: str | Path) -> tuple[str, dict[str, Path]]:
    """``(mode, {name: run directory})`` of a sweep written by :func:`launch_ablation`."""
    data = json.loads(Path(manifest).read_text())
    return data["mode"], {k: Path(v) for k, v in data["runs"].items()}


def run_state(run_dir: str | Path) -> str:
    """The state in a run's ``status.json`` (``queued``, ``running``, ``done``, ...; ``unknown`` without one)."""
    try:
        return str(json.loads((Path(run_dir) / "status.json").read_text()).get("state", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def ablation_results(run_dirs: dict[str, Path], train: ImageDataset, test: ImageDataset) -> dict[str, float | None]:
    """kNN accuracy of each finished run (None while a run is not ``done``)."""
    from ssl_viz.checkpoint import load_model

    out: dict[str, float | None] = {}
    for name, d in run_dirs.items():
        out[name] = _knn_of(load_model(d).embed_fn(), train, test) if run_state(d) == "done" else None
    return out


def _knn_of(fn, train: ImageDataset, test: ImageDataset) -> float:
    from ssl_viz.evaluate import knn_accuracy

    return knn_accuracy(_embed(fn, _float(train)), train.labels, _embed(fn, _float(test)), test.labels)


def run_ablation(base: TrainConfig, names: Sequence[str], train: ImageDataset, test: ImageDataset, mode: str = "add",
                 budget: float = 10.0, p: float = 0.5, run_root: str | Path | None = None,
                 progress: Progress | None = None) -> dict[str, float]:
    """The sweep in this process (for tests and the CLI): ``{name: kNN accuracy}`` including ``"baseline"``."""
    import tempfile

    from ssl_viz.train import Trainer

    report = progress or (lambda f, t: None)
    configs = ablation_configs(base, names, mode, budget, p)
    root = Path(run_root) if run_root else Path(tempfile.mkdtemp(prefix="ssl-viz-ablation-"))
    out = {}
    for i, (name, cfg) in enumerate(configs.items()):
        report(i / len(configs), f"Training with {name} {'added' if mode == 'add' else 'removed'} ({budget:g} s)…")
        trainer = Trainer(cfg, root / name, callbacks=[], dataset=train)
        trainer.fit()
        out[name] = _knn_of(trainer.method.encoder.eval(), train, test)
    report(1.0, "Done")
    return out


def attach_ablation(diag: Diagnosis, accuracies: dict[str, float | None], mode: str) -> Diagnosis:
    """Store the sweep in ``diag`` and each augmentation's ``ablation_delta`` (kNN with it minus without it)."""
    base = accuracies.get("baseline")
    diag.ablation = {"mode": mode, "knn_top1": dict(accuracies)}
    for a in diag.augmentations:
        acc = accuracies.get(a.name)
        if base is None or acc is None:
            continue
        a.ablation_delta = (acc - base) if mode == "add" else (base - acc)
    return diag
