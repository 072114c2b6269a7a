"""The ablation sweep's pure parts: each run's policy and config (an augmentation added to or removed from a
base policy), and attaching the runs' kNN accuracies to a Diagnosis. Training the runs is :mod:`ssl_viz.sweeps`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ssl_viz.analysis.diagnosis.report import Diagnosis
from ssl_viz.augment import POLICIES, SINGLE_TRANSFORMS, parse_policy, policy_to_spec, single_transform
from ssl_viz.config import AugmentConfig, TrainConfig

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
