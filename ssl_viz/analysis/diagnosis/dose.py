"""Dose-response: label damage and encoder invariance of each single augmentation at several strengths.

A single strength says little: a crop to 20% of the area destroys a Fashion-MNIST item that a crop
to 84% keeps. :func:`dose_response` measures every augmentation of
:data:`~ssl_viz.augment.SINGLE_TRANSFORMS` at each strength of :data:`STRENGTHS` (gentle to
today's strength 1) with the two-probe method of :func:`~ssl_viz.analysis.diagnosis.diagnose`
(the clean features and the probe are computed once; only the transformed images are new) and
says for each: safe up to X, harmful from Y. For crop, free rotation, colour jitter, blur,
solarize, jigsaw and cutout the strength is a magnitude (:func:`~ssl_viz.augment.single_transform`);
for grayscale, flip and rotate90 it is the probability of applying them
(:func:`~ssl_viz.augment.dose_transform`). :func:`~ssl_viz.analysis.diagnosis.recommend_policy`
(:mod:`.recommend`) turns the curves into a policy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ssl_viz.analysis.diagnosis.core import ProbeBench, Progress
from ssl_viz.analysis.diagnosis.recommend import is_safe, recommend_policy
from ssl_viz.analysis.diagnosis.report import AugmentationReport, Diagnosis, Thresholds, jsonable
from ssl_viz.augment import SINGLE_TRANSFORMS, dose_kind, dose_transform, policy_to_spec
from ssl_viz.data import ImageDataset

STRENGTHS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT_N_TRAIN, DEFAULT_N_TEST = 600, 300        # the default sample of the Diagnose page and the CLI


def dose_setting(name: str, strength: float) -> str:
    """Human text of augmentation ``name`` at ``strength``, e.g. ``"crop to 84% of the area"``, ``"p = 0.4"``."""
    s = float(strength)
    if dose_kind(name) == "probability":
        return f"p = {s:g}"
    cfg = dose_transform(name, s)
    return {
        "color_jitter": f"jitter strength {s:g} (brightness, contrast, saturation ±{80 * s:.0f}%, hue ±{0.2 * s:.2g} turn)",
        "rotation": f"rotate up to ±{cfg.rotation_degrees:.0f}°",
        "crop": f"crop to {100 * cfg.crop_scale[0]:.0f}% of the area",
        "blur": f"blur sigma {cfg.blur_sigma[0]:.2g} px",
        "solarize": f"invert pixels above {cfg.solarize_threshold:.2g}",
        "jigsaw": f"shuffle a {cfg.jigsaw_grid}x{cfg.jigsaw_grid} grid",
        "cutout": f"erase {100 * cfg.cutout_scale[0]:.0f}% of the area",
    }[name]


@dataclass
class DoseCurve:
    """One augmentation's dose-response: measurements and verdict at each strength (lists aligned with ``strengths``).

    ``safe_up_to`` is the largest strength up to which every strength is safe (label damage at most
    ``Thresholds.safe``), None when even the gentlest is not; ``harmful_from`` the smallest strength
    whose verdict is harmful (None: never). ``reports`` hold every number of each strength
    (:class:`~ssl_viz.analysis.diagnosis.AugmentationReport`).
    """

    name: str                       # a SINGLE_TRANSFORMS name
    kind: str                       # "magnitude" or "probability"
    strengths: list[float]
    settings: list[str]             # human text of each strength
    label_damage: list[float]       # per strength, in [0, 1]
    image_change: list[float]
    invariance: list[float | None]  # per strength, None without an encoder
    verdicts: list[str]             # per strength: harmful / neutral / suitable
    safe_up_to: float | None
    harmful_from: float | None
    summary: str
    reports: list[AugmentationReport] = field(default_factory=list)

    def at(self, strength: float) -> AugmentationReport:
        """The report at ``strength`` (KeyError when it was not measured)."""
        for s, r in zip(self.strengths, self.reports):
            if abs(s - strength) < 1e-9:
                return r
        raise KeyError(f"{self.name} was not measured at strength {strength}")


@dataclass
class DoseResponse:
    """The dose-response of every augmentation for one (dataset, label, encoder), and the policy it recommends."""

    dataset: str
    label: str | None
    class_names: list[str]
    n_train: int
    n_test: int
    seed: int
    chance: float
    probe_groups: list[str]
    probe_clean: float
    encoder: str | None
    curves: list[DoseCurve]
    recommended_policy: str         # spec in the --augment syntax (parse_policy)
    knn_top1: float | None = None
    linear_top1: float | None = None
    seconds: float = 0.0
    verification: dict = field(default_factory=dict)   # policy name -> kNN top-1 after the --verify runs
    thresholds: dict = field(default_factory=dict)

    def curve(self, name: str) -> DoseCurve:
        for c in self.curves:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def strengths(self) -> list[float]:
        """The strengths every curve was measured at."""
        return list(self.curves[0].strengths) if self.curves else []

    def at(self, strength: float = 1.0) -> Diagnosis:
        """The single-strength :class:`~ssl_viz.analysis.diagnosis.Diagnosis` at one of the measured strengths."""
        return Diagnosis(dataset=self.dataset, label=self.label, class_names=self.class_names, n_train=self.n_train,
                         n_test=self.n_test, strength=float(strength), seed=self.seed, chance=self.chance,
                         probe_groups=self.probe_groups, probe_clean=self.probe_clean,
                         augmentations=[c.at(strength) for c in self.curves], encoder=self.encoder,
                         knn_top1=self.knn_top1, linear_top1=self.linear_top1, seconds=self.seconds)

    @property
    def summaries(self) -> dict[str, str]:
        return {c.name: c.summary for c in self.curves}

    def to_dict(self) -> dict:
        """Plain, strict-JSON data (NaN written as null, floats rounded to 4 digits)."""
        return jsonable(asdict(self))

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _at(name: str, strength: float) -> str:
    return f"{strength:g} ({dose_setting(name, strength)})"


def summarize(name: str, strengths: Sequence[float], safe_up_to: float | None, harmful_from: float | None) -> str:
    """One sentence, e.g. ``"crop: safe up to strength 0.6 (crop to 52% of the area), harmful from 0.8 (crop to 36% of the area)"``."""
    if safe_up_to is not None and safe_up_to >= max(strengths):
        head = f"{name}: safe at every strength, up to {_at(name, safe_up_to)}"
    elif safe_up_to is not None:
        head = f"{name}: safe up to strength {_at(name, safe_up_to)}"
    else:
        head = f"{name}: not safe even at strength {_at(name, min(strengths))}"
    if harmful_from is None:
        return head + ("" if safe_up_to is not None and safe_up_to >= max(strengths) else ", never harmful")
    return head + f", harmful from {_at(name, harmful_from)}"


def curve_from_reports(name: str, strengths: Sequence[float], reports: Sequence[AugmentationReport],
                       thresholds: Thresholds = Thresholds()) -> DoseCurve:
    """A :class:`DoseCurve` from one report per strength (ascending strengths).

    ``safe_up_to``: the largest strength such that it and every gentler one are safe
    (:func:`~ssl_viz.analysis.diagnosis.is_safe`); ``harmful_from``: the gentlest strength judged harmful.
    """
    safe_up_to = None
    for s, r in zip(strengths, reports):
        if not is_safe(r, thresholds):
            break
        safe_up_to = float(s)
    harmful_from = next((float(s) for s, r in zip(strengths, reports) if r.verdict == "harmful"), None)
    return DoseCurve(
        name=name, kind=dose_kind(name), strengths=[float(s) for s in strengths],
        settings=[dose_setting(name, s) for s in strengths], label_damage=[r.label_damage for r in reports],
        image_change=[r.image_change for r in reports], invariance=[r.invariance for r in reports],
        verdicts=[r.verdict for r in reports], safe_up_to=safe_up_to, harmful_from=harmful_from,
        summary=(f"{name}: changes (almost) nothing in these images at any strength"
                 if max(r.image_change for r in reports) < thresholds.min_change else summarize(name, strengths, safe_up_to, harmful_from)),
        reports=list(reports),
    )


def dose_response(
    train: ImageDataset,
    test: ImageDataset,
    embed_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    augmentations: Sequence[str] = SINGLE_TRANSFORMS,
    strengths: Sequence[float] = STRENGTHS,
    seed: int = 0,
    encoder_name: str | None = None,
    thresholds: Thresholds = Thresholds(),
    progress: Progress | None = None,
    linear: bool = True,
    max_invariance_images: int = 500,
    candidate_groups: Sequence[str] | None = None,
) -> DoseResponse:
    """Label damage (and encoder invariance) of each augmentation at each strength, and the recommended policy.

    Args:
        train, test: labelled datasets (same label); the probe trains on ``train``, the measurements
            are on ``test``. Images are read in batches (bounded memory at any size).
        embed_fn: the encoder, images ``[B, C, H, W]`` in [0, 1] -> ``[B, D]``; None skips invariance and kNN.
        augmentations: names of :data:`~ssl_viz.augment.SINGLE_TRANSFORMS`.
        strengths: doses in (0, 1], sorted ascending (duplicates dropped).
        seed: seeds the draws (the same draws at every strength) and the probe's validation split.
        thresholds: the verdict rules (:class:`~ssl_viz.analysis.diagnosis.Thresholds`).
        progress: ``progress(fraction, text)`` callback, called at each stage.
        candidate_groups: the feature groups the probe may choose from (default all of
            :data:`~ssl_viz.analysis.diagnosis.PROBE_GROUPS`).

    Raises:
        ValueError: unlabelled data, an unknown augmentation, a strength outside (0, 1], or a sample
            too small for the probe (fewer than 2 training images of a class).
    """
    start = time.perf_counter()
    doses = sorted({float(s) for s in strengths})
    if not doses or not all(0.0 < s <= 1.0 for s in doses):
        raise ValueError(f"strengths must be in (0, 1], got {list(strengths)}")
    for name in augmentations:
        dose_kind(name)                                   # raises for an unknown name
    report = progress or (lambda f, t: None)
    bench = ProbeBench(train, test, embed_fn, seed=seed, linear=linear, max_invariance_images=max_invariance_images,
                       progress=lambda f, t: report(0.15 * f, t), candidate_groups=candidate_groups)
    curves = []
    total = max(1, len(augmentations) * len(doses))
    for i, name in enumerate(augmentations):
        reports = []
        for j, s in enumerate(doses):
            report(0.15 + 0.85 * (i * len(doses) + j) / total,
                   f"Measuring {name} at {dose_setting(name, s)} ({i + 1}/{len(augmentations)})…")
            reports.append(bench.measure(name, dose_transform(name, s), thresholds))
        curves.append(curve_from_reports(name, doses, reports, thresholds))
    report(1.0, "Done")
    return DoseResponse(
        dataset=train.name, label=train.label_factor, class_names=list(train.class_names), n_train=len(train), n_test=len(test),
        seed=int(seed), chance=bench.chance, probe_groups=list(bench.probe.groups_), probe_clean=bench.acc_clean,
        encoder=encoder_name, curves=curves, recommended_policy=policy_to_spec(recommend_policy(curves, thresholds, image_size=min(train.image_size))),
        knn_top1=bench.knn, linear_top1=bench.linear, seconds=time.perf_counter() - start, thresholds=asdict(thresholds),
    )
