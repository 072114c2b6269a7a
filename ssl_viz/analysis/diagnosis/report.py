"""The diagnosis report: one AugmentationReport per augmentation, the Diagnosis of a (dataset, label, encoder),
the verdict rules (Thresholds, judge) and the two normalised scores; JSON and CSV export."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

VERDICTS = ("harmful", "neutral", "suitable")
VERDICT_COLORS = {"harmful": "#d62728", "neutral": "#9aa5b1", "suitable": "#2ca02c"}


@dataclass(frozen=True)
class Thresholds:
    """Verdict rules. ``damage`` is the normalised label damage in [0, 1], ``change`` the image change."""

    harmful: float = 0.3        # damage >= this: harmful
    suitable: float = 0.1       # damage <= this (and the images change): suitable
    safe: float = 0.2           # dose-response: damage <= this (and not harmful) is safe, so a recommended policy may use it
    min_change: float = 0.03    # image change below this: the augmentation does (almost) nothing here
    invariant: float = 0.7      # invariance score above this: "already invariant"
    sensitive: float = 0.3      # below this: "not invariant"


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
        return jsonable(asdict(self))

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

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


def jsonable(obj):
    """``obj`` as strict-JSON data: dict keys as strings, tuples as lists, floats rounded to 4 digits,
    NaN and infinities as None, numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else round(obj, 4)
    if isinstance(obj, (np.floating, np.integer)):
        return jsonable(obj.item())
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


def report_stem(dataset: str, label: str | None) -> str:
    """File name stem of a diagnosis export: ``diagnosis-<dataset>-<label>`` with path separators made safe."""
    return f"diagnosis-{dataset.replace(':', '_').replace('/', '_')}-{label or 'label'}"
