"""Run directories and shipped models: save a run's checkpoint, shrink it for shipping, load it back, list them.

A run directory (or a shipped model in ``models/``) holds (names in :mod:`ssl_viz.rundir`)::

    config.json               TrainConfig (ssl_viz.config)
    card.json                 method, encoder, data, steps, metrics, versions, command
    checkpoint.safetensors    the method's state_dict (encoder, heads, queues, ...)
    trainer_state.pt          optimiser + loop state for resuming (weights_only=True)
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch
from torch import nn

from ssl_viz.checkpoint.foreign import load_foreign, load_imagenet_reference
from ssl_viz.checkpoint.report import CheckpointError, LoadedModel, LoadReport, check_finite, fit_report
from ssl_viz.checkpoint.tensors import drop_compile_prefix, read_state_dict, save_state
from ssl_viz.config import TrainConfig, from_dict, to_dict
from ssl_viz.encoders import ENCODERS, build_encoder
from ssl_viz.fileio import atomic_write, atomic_write_json, read_json
from ssl_viz.rundir import CARD, CHECKPOINT, CONFIG, TRAINER_STATE

SHIPPED_PREFIXES = ("encoder.", "projector.", "classifier.", "prototypes.")


def library_versions() -> dict[str, str]:
    import numpy
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def save_run(run_dir: str | Path, method: nn.Module, cfg: TrainConfig, card: dict, trainer_state: dict | None = None) -> None:
    """Write a complete, consistent run checkpoint (each file atomically; card last)."""
    run_dir = Path(run_dir)
    atomic_write_json(run_dir / CONFIG, to_dict(cfg))
    save_state(run_dir, method.state_dict())
    if trainer_state is not None:
        atomic_write(run_dir / TRAINER_STATE, lambda tmp: torch.save(trainer_state, tmp))
    card = {**card, "versions": library_versions(), "saved_at": time.time()}
    atomic_write_json(run_dir / CARD, card)


def ship_run(run_dir: str | Path, half: bool = False) -> tuple[int, int]:
    """Shrink a finished run for shipping: keep the encoder and heads, drop training-only state.

    Memory banks, queues, momentum / target encoders and predictors only serve training;
    :func:`load_run` rebuilds them fresh when they are absent. ``half`` stores floating
    tensors in float16 (loading casts them back to float32). The resumable trainer state
    is removed. Returns the checkpoint's (bytes before, bytes after).
    """
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    before = path.stat().st_size
    state = {k: v for k, v in read_state_dict(path).items() if k.startswith(SHIPPED_PREFIXES)}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_state(run_dir, state)
    (run_dir / TRAINER_STATE).unlink(missing_ok=True)
    return before, path.stat().st_size


def load_trainer_state(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / TRAINER_STATE
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def load_run(run_dir: str | Path) -> LoadedModel:
    """Rebuild the method saved in ``run_dir`` and return its encoder and heads."""
    from ssl_viz.methods import build_method

    run_dir = Path(run_dir)
    card = read_json(run_dir / CARD)
    if isinstance(card, dict) and str(card.get("source", "")).startswith("imagenet:"):
        return load_imagenet_reference(card, run_dir)
    cfg_dict = read_json(run_dir / CONFIG)
    if card is None or cfg_dict is None:
        raise CheckpointError(f"{run_dir} has no readable {CARD} / {CONFIG}")
    if not isinstance(card, dict) or not isinstance(cfg_dict, dict):
        raise CheckpointError(f"{run_dir} has a {CARD} / {CONFIG} that is not a JSON object")
    try:
        cfg = from_dict(TrainConfig, cfg_dict)
        encoder = build_encoder(cfg.encoder, in_channels=card.get("in_channels", 3), width=cfg.encoder_width, input_size=card.get("input_size"))
        method = build_method(cfg.method, encoder, cfg.method_cfg, num_samples=card.get("num_samples", 1), num_classes=card.get("num_classes", 10))
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, MemoryError) as exc:
        raise CheckpointError(f"{run_dir.name}: {CONFIG} / {CARD} do not describe a model that can be built ({str(exc)[:200]})") from exc
    state, _ = drop_compile_prefix(read_state_dict(run_dir / CHECKPOINT))
    report = fit_report(method.state_dict(), state)
    report.missing = [k for k in report.missing if k.startswith(SHIPPED_PREFIXES)]  # training-only state may be left out (ship_run)
    if report.missing or report.mismatched:
        raise CheckpointError(f"{run_dir.name}: {CHECKPOINT} does not fit {cfg.method}/{cfg.encoder} (width {cfg.encoder_width}) "
                              f"of {CONFIG}: {report.text()}")
    method.load_state_dict(state, strict=False)
    unexpected = report.unexpected
    check_finite(method, run_dir)
    method.eval()
    for p in method.parameters():
        p.requires_grad_(False)
    classifier = getattr(method, "classifier", None)
    report = LoadReport("ssl-viz", [], list(unexpected), len(state))
    return LoadedModel(method.encoder, method.projector, classifier, {"name": run_dir.name, **card}, str(run_dir), report)


def load_model(source: str | Path, encoder: str | None = None, allow_partial: bool = False) -> LoadedModel:
    """Load a run directory, a shipped model, or a checkpoint file (with ``encoder``).

    ``allow_partial`` lets a foreign file that lacks some of the encoder's tensors load anyway (those stay
    random; see :func:`~ssl_viz.checkpoint.foreign.load_foreign`). Raises :class:`CheckpointError`.
    """
    path = Path(source)
    if path.is_dir():
        return load_run(path)
    if path.is_file():
        if encoder is None:
            raise CheckpointError(f"{path.name} is a bare checkpoint file: say which encoder it is for (--encoder, one of {', '.join(ENCODERS)})")
        return load_foreign(path, encoder, allow_partial=allow_partial)
    raise CheckpointError(f"no model at {source}")


def is_model_dir(path: Path) -> bool:
    return (path / CARD).is_file() and ((path / CHECKPOINT).is_file() or str(read_json(path / CARD, {}).get("source", "")).startswith("imagenet:"))


def list_models(*roots: str | Path) -> list[tuple[str, Path, dict]]:
    """Every model directory directly under ``roots`` as (label, path, card), newest first per root."""
    found = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        entries = [p for p in root.iterdir() if p.is_dir() and is_model_dir(p)]
        for p in sorted(entries, key=lambda p: p.name):
            found.append((f"{root.name}/{p.name}", p, read_json(p / CARD, {})))
    return found
