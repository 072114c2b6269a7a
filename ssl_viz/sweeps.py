"""Sweeps of short training runs: the diagnosis's augmentation ablation and the verification of its recommended
policy, trained here or queued as background runs.

An ablation sweep trains one short SimCLR run per augmentation, with that augmentation added
to (or removed from) a base policy, plus a ``"baseline"`` run of the base policy; each run's
kNN accuracy against the baseline's is the augmentation's consequence (``ablation_delta``, see
:func:`ssl_viz.analysis.diagnosis.attach_ablation`). The policies and configs are pure
(:func:`ssl_viz.analysis.diagnosis.ablation_configs`); this module trains them
(:func:`run_ablation`, in this process) or queues them with :func:`ssl_viz.jobs.start_run`
(:func:`launch_ablation`) and reads the finished ones back (:func:`ablation_results`).

A verification trains the same short SimCLR run three times: with the policy the dose-response
recommends (:func:`ssl_viz.analysis.diagnosis.dose_response`), with SimCLR's recipe ``simclr`` and
with this project's ``simclr-small``; each run's kNN top-1 (the dataset's label, its whole test set
against its whole training set) says whether the recommendation holds up in training
(:func:`run_verification` here, :func:`launch_verification` / :func:`verification_results` in the background).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ssl_viz import jobs
from ssl_viz.analysis.diagnosis import Progress, ablation_configs, knn_top1
from ssl_viz.augment import parse_policy
from ssl_viz.config import TrainConfig
from ssl_viz.data import ImageDataset, load_dataset
from ssl_viz.fileio import atomic_write_json, read_json
from ssl_viz.paths import cache_dir
from ssl_viz.rundir import read_status

VERIFY_POLICIES = ("recommended", "simclr", "simclr-small")


def sweep_config(dataset: str, label: str | None, augment: str, device: str = "auto", seed: int = 0) -> TrainConfig:
    """The base run of an ablation sweep or a verification: SimCLR, a small CNN of width 16, the default batch (128)
    and learning rate (6e-3) of :class:`~ssl_viz.config.TrainConfig`, no kNN monitor."""
    return TrainConfig(method="simclr", encoder="small-cnn", encoder_width=16, dataset=dataset, dataset_label=label,
                       augment=augment, device=device, knn_every=0, seed=seed)


def new_manifest() -> Path:
    """Where a sweep queued now records its runs: ``<cache>/ablation/<YYYYmmdd-HHMMSS>.json``."""
    return cache_dir() / "ablation" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"


def launch_ablation(base: TrainConfig, names: Sequence[str], mode: str = "add", budget: float = 60.0, p: float = 0.5,
                    root: str | Path | None = None, manifest: str | Path | None = None) -> dict[str, Path]:
    """Queue the sweep as background ``python -m ssl_viz train`` runs (:func:`ssl_viz.jobs.start_run`).

    The runs join the app's run queue (``$SSL_VIZ_MAX_RUNS`` at a time, default 1), so they
    also show on the Runs page. Returns ``{name: run directory}`` (``"baseline"`` included)
    and, with ``manifest``, writes it there as JSON for :func:`load_sweep`. Read the results
    with :func:`ablation_results`; unfinished runs read as None.
    """
    dirs = {name: jobs.start_run(cfg, root) for name, cfg in ablation_configs(base, names, mode, budget, p).items()}
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
    return str(read_status(run_dir).get("state", "unknown"))


def sweep_states(manifest: str | Path) -> tuple[str, dict[str, Path], dict[str, str]]:
    """``(mode, {name: run directory}, {name: state})`` of the sweep recorded in ``manifest``."""
    mode, dirs = load_sweep(manifest)
    return mode, dirs, {name: run_state(d) for name, d in dirs.items()}


def ablation_results(run_dirs: dict[str, Path], train: ImageDataset, test: ImageDataset) -> dict[str, float | None]:
    """kNN accuracy of each finished run (None while a run is not ``done``)."""
    from ssl_viz.checkpoint import load_model

    out: dict[str, float | None] = {}
    for name, d in run_dirs.items():
        out[name] = knn_top1(load_model(d).embed_fn(), train, test) if run_state(d) == "done" else None
    return out


def run_ablation(base: TrainConfig, names: Sequence[str], train: ImageDataset, test: ImageDataset, mode: str = "add",
                 budget: float = 10.0, p: float = 0.5, run_root: str | Path | None = None,
                 progress: Progress | None = None) -> dict[str, float]:
    """The sweep in this process (for tests and the CLI): ``{name: kNN accuracy}`` including ``"baseline"``.

    Each run trains ``budget`` seconds on ``train`` into ``run_root/<name>`` (default a fresh temporary folder).
    """
    configs = ablation_configs(base, names, mode, budget, p)
    verb = "added" if mode == "add" else "removed"
    return _train_each(configs, train, test, run_root, "ssl-viz-ablation-", progress,
                       lambda name: f"Training with {name} {verb} ({budget:g} s)…")


def _train_each(configs: dict[str, TrainConfig], train: ImageDataset, test: ImageDataset, run_root: str | Path | None,
                prefix: str, progress: Progress | None, text) -> dict[str, float]:
    """Train each config in this process, one after the other, on ``train`` into ``run_root/<name>`` (default a fresh
    temporary folder named ``prefix...``); returns ``{name: kNN top-1 of its encoder, test against train}``."""
    from ssl_viz.train import Trainer

    report = progress or (lambda f, t: None)
    root = Path(run_root) if run_root else Path(tempfile.mkdtemp(prefix=prefix))
    out = {}
    for i, (name, cfg) in enumerate(configs.items()):
        report(i / len(configs), text(name))
        trainer = Trainer.from_config(cfg, root / name, callbacks=[], dataset=train)
        trainer.fit()
        out[name] = knn_top1(trainer.method.encoder.eval(), train, test)
    report(1.0, "Done")
    return out



# ----------------------------------------------------------------------------- verification of a recommended policy


def verification_configs(base: TrainConfig, recommended_spec: str, budget: float,
                         policies: Sequence[str] = VERIFY_POLICIES) -> dict[str, TrainConfig]:
    """``{"recommended" | "simclr" | "simclr-small": base with that policy and a time budget of `budget` seconds}``,
    for the names in ``policies`` (default all three, in that order).

    Raises ValueError when ``recommended_spec`` does not parse (:func:`~ssl_viz.augment.parse_policy`),
    ``budget`` is not positive or ``policies`` names something else.
    """
    parse_policy(recommended_spec)
    if not budget > 0:
        raise ValueError(f"the verification budget must be positive seconds, got {budget}")
    unknown = [p for p in policies if p not in VERIFY_POLICIES]
    if unknown or not policies:
        raise ValueError(f"verification policies must be some of {', '.join(VERIFY_POLICIES)}, got {', '.join(policies) or 'none'}")
    specs = {"recommended": recommended_spec, "simclr": "simclr", "simclr-small": "simclr-small"}
    return {name: replace(base, augment=specs[name], time_budget=float(budget)) for name in VERIFY_POLICIES if name in policies}


def run_verification(base: TrainConfig, recommended_spec: str, train: ImageDataset, test: ImageDataset, budget: float,
                     run_root: str | Path | None = None, progress: Progress | None = None,
                     policies: Sequence[str] = VERIFY_POLICIES) -> dict[str, float]:
    """Train the runs of :func:`verification_configs` (``policies``, default all three) one after the other in this
    process, each on ``train`` for ``budget`` seconds, into ``run_root/<name>`` (default a fresh temporary folder);
    returns ``{name: kNN top-1 of the run's encoder, test against train}`` (:func:`~ssl_viz.analysis.diagnosis.knn_top1`)."""
    configs = verification_configs(base, recommended_spec, budget, policies)
    return _train_each(configs, train, test, run_root, "ssl-viz-verify-", progress,
                       lambda name: f"Training SimCLR with the {name} policy ({budget:g} s)…")


def new_verification_manifest() -> Path:
    """Where a verification queued now records its runs: ``<cache>/verification/<YYYYmmdd-HHMMSS>.json``."""
    return cache_dir() / "verification" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"


def launch_verification(base: TrainConfig, recommended_spec: str, budget: float, root: str | Path | None = None,
                        manifest: str | Path | None = None) -> Path:
    """Queue the three verification runs as background runs (:func:`ssl_viz.jobs.start_run`, shown on the Runs page too).

    Writes and returns a manifest (default :func:`new_verification_manifest`): JSON with ``kind``
    (``"verification"``), ``dataset``, ``label``, ``budget``, ``recommended`` (the spec), ``policies``
    (name -> spec) and ``runs`` (name -> run directory). Read it back with :func:`verification_results`.
    Raises ValueError (bad spec or budget) or :class:`ssl_viz.jobs.JobError` (a run that cannot start).
    """
    configs = verification_configs(base, recommended_spec, budget)
    dirs = {name: jobs.start_run(cfg, root) for name, cfg in configs.items()}
    path = Path(manifest) if manifest is not None else new_verification_manifest()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"kind": "verification", "dataset": base.dataset, "label": base.dataset_label, "budget": budget,
                             "recommended": recommended_spec, "policies": {k: c.augment for k, c in configs.items()},
                             "runs": {k: str(v) for k, v in dirs.items()}, "knn_top1": {}})
    return path


def verification_results(manifest: str | Path, train: ImageDataset | None = None,
                         test: ImageDataset | None = None) -> tuple[dict[str, str], dict[str, float | None]]:
    """``(states, knn)`` of the verification in ``manifest``: each run's state (``queued``, ``running``, ``done``, ...)
    and, once it is ``done``, its kNN top-1 (None before).

    The accuracy is measured on ``train`` / ``test`` (default: the manifest's dataset and label, whole
    splits) the first time a run is seen done, and stored in the manifest, so later calls are cheap.
    Raises FileNotFoundError / ValueError for a missing or unreadable manifest.
    """
    from ssl_viz.checkpoint import load_model

    data = read_json(manifest)
    if not isinstance(data, dict) or "runs" not in data:
        if not Path(manifest).exists():
            raise FileNotFoundError(2, "no such verification manifest", str(manifest))
        raise ValueError(f"{manifest} is not a verification manifest")
    runs = {k: Path(v) for k, v in data["runs"].items()}
    states = {name: run_state(d) for name, d in runs.items()}
    stored: dict = dict(data.get("knn_top1") or {})
    missing = [n for n in runs if states[n] == "done" and stored.get(n) is None]
    if missing:
        train = train or load_dataset(data["dataset"], "train", label=data.get("label"))
        test = test or load_dataset(data["dataset"], "test", label=data.get("label"))
        for name in missing:
            stored[name] = knn_top1(load_model(runs[name]).embed_fn(), train, test)
        atomic_write_json(manifest, {**data, "knn_top1": stored})
    return states, {name: stored.get(name) if states[name] == "done" else None for name in runs}
