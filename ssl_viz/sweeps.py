"""Sweeps of short training runs: the diagnosis's augmentation ablation, trained here or queued as background runs.

An ablation sweep trains one short SimCLR run per augmentation, with that augmentation added
to (or removed from) a base policy, plus a ``"baseline"`` run of the base policy; each run's
kNN accuracy against the baseline's is the augmentation's consequence (``ablation_delta``, see
:func:`ssl_viz.analysis.diagnosis.attach_ablation`). The policies and configs are pure
(:func:`ssl_viz.analysis.diagnosis.ablation_configs`); this module trains them
(:func:`run_ablation`, in this process) or queues them with :func:`ssl_viz.jobs.start_run`
(:func:`launch_ablation`) and reads the finished ones back (:func:`ablation_results`).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ssl_viz import jobs
from ssl_viz.analysis.diagnosis import Progress, ablation_configs, knn_top1
from ssl_viz.config import TrainConfig
from ssl_viz.data import ImageDataset
from ssl_viz.paths import cache_dir
from ssl_viz.rundir import read_status


def sweep_config(dataset: str, label: str | None, augment: str, device: str = "auto", seed: int = 0) -> TrainConfig:
    """The base run of an ablation sweep: SimCLR, a small CNN of width 16, batch 128, no kNN monitor."""
    return TrainConfig(method="simclr", encoder="small-cnn", encoder_width=16, dataset=dataset, dataset_label=label,
                       augment=augment, batch_size=128, device=device, knn_every=0, seed=seed)


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
    from ssl_viz.train import Trainer

    report = progress or (lambda f, t: None)
    configs = ablation_configs(base, names, mode, budget, p)
    root = Path(run_root) if run_root else Path(tempfile.mkdtemp(prefix="ssl-viz-ablation-"))
    out = {}
    for i, (name, cfg) in enumerate(configs.items()):
        report(i / len(configs), f"Training with {name} {'added' if mode == 'add' else 'removed'} ({budget:g} s)…")
        trainer = Trainer.from_config(cfg, root / name, callbacks=[], dataset=train)
        trainer.fit()
        out[name] = knn_top1(trainer.method.encoder.eval(), train, test)
    report(1.0, "Done")
    return out

