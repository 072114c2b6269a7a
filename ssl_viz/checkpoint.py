"""Checkpoints: safetensors + JSON model card, and import of foreign layouts.

A run directory (or a shipped model in ``models/``) holds::

    config.json               TrainConfig (ssl_viz.config)
    card.json                 method, encoder, data, steps, metrics, versions, command
    checkpoint.safetensors    the method's state_dict (encoder, heads, queues, ...)
    trainer_state.pt          optimiser + loop state for resuming (weights_only=True)

:func:`load_model` turns any of these into a :class:`LoadedModel` (eval mode,
read-only), and so does a foreign checkpoint file: torchvision, MoCo
(``module.encoder_q.``), SwAV (``module.``), DINO (``teacher``/``student`` +
``backbone.``), lightly and solo-learn (``state_dict`` + ``backbone.``) layouts
are recognised, mapped, and reported (missing / unexpected keys).
A model card may also name ``"source": "imagenet:mobilenet_v2"``: the ImageNet
reference is then built from torchvision weights found offline.
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ssl_viz.config import TrainConfig, from_dict, to_dict
from ssl_viz.encoders import ENCODERS, Encoder, EncoderError, build_encoder
from ssl_viz.fileio import atomic_write, atomic_write_json, read_json

CHECKPOINT = "checkpoint.safetensors"
CARD = "card.json"
CONFIG = "config.json"
TRAINER_STATE = "trainer_state.pt"

FOREIGN_PREFIXES = (
    "module.encoder_q.", "encoder_q.", "module.base_encoder.", "base_encoder.", "module.backbone.", "backbone.",
    "module.encoder.", "encoder.body.net.", "encoder.body.", "encoder.", "module.", "model.", "net.", "body.net.", "body.",
)
MAX_WIDTH = 1024  # largest base width of small-cnn / resnet18-cifar accepted from a checkpoint file
NESTED_KEYS = ("state_dict", "model", "teacher", "student", "online_network", "module")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the encoder; the message says why."""


@dataclass
class LoadReport:
    """How a checkpoint's keys were matched to the encoder."""

    layout: str = "ssl-viz"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    loaded: int = 0

    def summary(self) -> str:
        text = f"{self.layout} layout: {self.loaded} tensors loaded"
        if self.missing:
            text += f"; {len(self.missing)} missing (e.g. {', '.join(self.missing[:3])})"
        if self.unexpected:
            text += f"; {len(self.unexpected)} unexpected (e.g. {', '.join(self.unexpected[:3])})"
        return text


@dataclass
class LoadedModel:
    """A model ready to look at: eval mode, shared read-only between sessions.

    Attributes:
        encoder: backbone ``f`` (images in [0, 1] -> ``[B, D]``).
        projector: projection head ``g`` or None (foreign / ImageNet models).
        classifier: class-logit head of supervised models, or None.
        card: the model card (method, encoder, dataset, metrics, ...).
    """

    encoder: Encoder
    projector: nn.Module | None
    classifier: nn.Module | None
    card: dict
    source: str
    report: LoadReport = field(default_factory=LoadReport)

    @property
    def name(self) -> str:
        return self.card.get("name") or Path(self.source).name

    def representations(self) -> list[str]:
        """Embedding choices: ``backbone``, ``projector`` (if any), ``stage:NAME`` per stage."""
        reps = ["backbone"] + (["projector"] if self.projector is not None else [])
        return reps + [f"stage:{s}" for s in self.encoder.stage_names()[:-1]]

    def embed_fn(self, representation: str = "backbone") -> Callable[[torch.Tensor], torch.Tensor]:
        """A function images ``[B, C, H, W]`` -> embeddings ``[B, D]`` for one representation."""
        if representation == "backbone":
            return self.encoder
        if representation == "projector":
            if self.projector is None:
                raise CheckpointError(f"{self.name} has no projection head")
            return lambda x: self.projector(self.encoder(x))
        if representation.startswith("stage:"):
            stage = representation.split(":", 1)[1]
            if stage not in self.encoder.stage_names():
                raise CheckpointError(f"{self.encoder.name} has no stage {stage!r}")
            return lambda x: torch.flatten(F.adaptive_avg_pool2d(self.encoder.forward_stages(x)[stage], 1), 1)
        raise CheckpointError(f"unknown representation {representation!r}; choose from {self.representations()}")


# ----------------------------------------------------------------------------- saving


def library_versions() -> dict[str, str]:
    import numpy
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def save_state(run_dir: str | Path, state: dict[str, torch.Tensor]) -> None:
    """Atomically write ``state`` as ``checkpoint.safetensors`` (tensors copied to the CPU)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    atomic_write(Path(run_dir) / CHECKPOINT, lambda tmp: save_file(tensors, tmp, metadata={"format": "ssl-viz"}))


def save_run(run_dir: str | Path, method: nn.Module, cfg: TrainConfig, card: dict, trainer_state: dict | None = None) -> None:
    """Write a complete, consistent run checkpoint (each file atomically; card last)."""
    run_dir = Path(run_dir)
    atomic_write_json(run_dir / CONFIG, to_dict(cfg))
    save_state(run_dir, method.state_dict())
    if trainer_state is not None:
        atomic_write(run_dir / TRAINER_STATE, lambda tmp: torch.save(trainer_state, tmp))
    card = {**card, "versions": library_versions(), "saved_at": time.time()}
    atomic_write_json(run_dir / CARD, card)


SHIPPED_PREFIXES = ("encoder.", "projector.", "classifier.", "prototypes.")


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


# ----------------------------------------------------------------------------- reading files


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte header length, then its JSON header ``{...``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a torch file (``weights_only=True``), nested dicts unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path.name} is not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path.name} cannot be loaded safely as weights (weights_only=True): {_torch_load_reason(exc)}; "
                              "ssl-viz never runs code from a checkpoint") from exc
    return unwrap_state_dict(obj)


def _torch_load_reason(exc: Exception) -> str:
    """The specific part of a torch.load error (torch's own text also suggests weights_only=False: not for us)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it needs the Python object {found.group(1)}, which is not a tensor or container"
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        return f"not a plain weights file ({' '.join(text.split())[:160] or 'unsupported content'})"
    return " ".join((text.splitlines() or [type(exc).__name__])[0].split())[:200] or type(exc).__name__


def unwrap_state_dict(obj, prefer: str = "teacher", depth: int = 0) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a checkpoint object (``state_dict``, ``model``, DINO ``teacher``...)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    if depth > 8:
        raise CheckpointError("no state dict found in checkpoint (dicts nested too deep)")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if len(tensors) >= max(1, len(obj) // 2):
        return tensors
    keys = [prefer] + [k for k in NESTED_KEYS if k != prefer]
    for key in keys:
        if isinstance(obj.get(key), dict):
            return unwrap_state_dict(obj[key], prefer, depth + 1)
    raise CheckpointError(f"no state dict found in checkpoint (top-level keys: {', '.join(map(str, list(obj)[:8]))})")


def strip_prefixes(state: dict[str, torch.Tensor], target_keys: set[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Map foreign keys onto ``target_keys`` by removing known prefixes; returns (mapped, layout name)."""
    best, best_layout, best_hits = {}, "unknown", -1
    for prefix in ("",) + FOREIGN_PREFIXES:
        mapped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        renamed = {sequential_to_named(k): v for k, v in mapped.items()}
        for candidate, suffix in ((mapped, ""), (renamed, " (nn.Sequential of ResNet children, e.g. lightly)")):
            hits = len(set(candidate) & target_keys)
            if hits > best_hits:
                best, best_layout, best_hits = candidate, (prefix.rstrip(".") or "plain") + suffix, hits
    return best, best_layout


RESNET_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def sequential_to_named(key: str) -> str:
    """``4.0.conv1.weight`` -> ``layer1.0.conv1.weight``: lightly's ``nn.Sequential(*resnet.children()[:-1])`` keys."""
    head, _, rest = key.partition(".")
    return f"{RESNET_CHILDREN[head]}.{rest}" if head in RESNET_CHILDREN else key


def infer_in_channels(state: dict[str, torch.Tensor]) -> int:
    """Input channels from the first 4-D weight (a conv) in the state dict."""
    for value in state.values():
        if value.ndim == 4:
            return int(value.shape[1])
    return 3


def load_foreign(path: str | Path, encoder_name: str, width: int | None = None) -> LoadedModel:
    """Load a foreign checkpoint file into encoder ``encoder_name`` (keys mapped, report kept)."""
    if encoder_name not in ENCODERS:
        raise CheckpointError(f"unknown encoder {encoder_name!r}; choose one of: {', '.join(ENCODERS)}")
    state = read_state_dict(path)
    in_channels = infer_in_channels(state) if encoder_name in ("small-cnn", "resnet18-cifar", "vit-tiny") else 3
    if width is None and encoder_name in ("small-cnn", "resnet18-cifar"):
        first = next((v for v in state.values() if v.ndim == 4), None)
        width = int(first.shape[0]) if first is not None else 64
    if in_channels not in (1, 3):  # images have 1 or 3 channels; anything else is another architecture
        raise CheckpointError(f"{Path(path).name}: its first convolution takes {in_channels} input channels, not 1 or 3; "
                              f"is --encoder {encoder_name} right?")
    if not 1 <= (width or 64) <= MAX_WIDTH:  # the encoder is built from this: never allocate a giant from a tiny file
        raise CheckpointError(f"{Path(path).name}: implausible base width {width} for {encoder_name} (at most {MAX_WIDTH}); "
                              "is --encoder right?")
    try:
        encoder = build_encoder(encoder_name, in_channels=in_channels, width=width or 64)
    except (RuntimeError, MemoryError) as exc:
        raise CheckpointError(f"{Path(path).name}: cannot build {encoder_name} for it: {str(exc)[:200]}") from exc
    module = getattr(encoder.body, "net", encoder.body)  # torchvision bodies keep torchvision's key names
    target = module.state_dict()
    mapped, layout = strip_prefixes(state, set(target))
    usable = {k: v for k, v in mapped.items() if k in target and v.shape == target[k].shape}
    mismatched = [k for k, v in mapped.items() if k in target and v.shape != target[k].shape]
    if not usable:
        raise CheckpointError(
            f"{Path(path).name}: no tensor matches encoder {encoder_name} "
            f"(first keys: {', '.join(list(state)[:4])}); is --encoder right?"
        )
    module.load_state_dict(usable, strict=False)
    report = LoadReport(
        layout=layout,
        missing=sorted(set(target) - set(usable)),
        unexpected=sorted((set(mapped) - set(target)) | set(mismatched)),
        loaded=len(usable),
    )
    check_finite(encoder, path)
    card = {"name": Path(path).name, "method": "imported", "encoder": encoder_name, "in_channels": in_channels, "import_report": report.summary()}
    return LoadedModel(encoder.eval(), None, None, card, str(path), report)


def check_finite(module: nn.Module, source) -> None:
    bad = [n for n, p in module.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise CheckpointError(f"{Path(str(source)).name}: non-finite (NaN/inf) values in {len(bad)} tensors, e.g. {bad[0]}")


# ----------------------------------------------------------------------------- run directories


@dataclass
class FitReport:
    """How a state dict fits a module's: keys it lacks, keys it has in excess, and keys with other shapes."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    def text(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing keys (e.g. {', '.join(self.missing[:3])})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected keys (e.g. {', '.join(self.unexpected[:3])})")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} tensors of another shape (e.g. {'; '.join(self.mismatched[:2])})")
        return "; ".join(parts) or "fits"


def fit_report(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> FitReport:
    mismatched = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in target.items() if k in state and state[k].shape != v.shape]
    return FitReport(sorted(set(target) - set(state)), sorted(set(state) - set(target)), mismatched)



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
    state = read_state_dict(run_dir / CHECKPOINT)
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


def load_imagenet_reference(card: dict, where: Path | str) -> LoadedModel:
    """The supervised ImageNet reference named by ``card["source"]`` (``imagenet:ARCH``).

    The weight file is read (and sha256-checked) once: the backbone takes its
    features, the class-logit head is rebuilt from its classifier tensors.
    """
    from ssl_viz.encoders import load_imagenet_state_dict

    arch = card["source"].split(":", 1)[1]
    try:
        encoder = build_encoder(arch, input_size=card.get("input_size"))
        state = load_imagenet_state_dict(arch)
    except EncoderError as exc:
        raise CheckpointError(str(exc)) from exc
    prefix = "fc." if arch.startswith("resnet") else "classifier.1."
    encoder.body.net.load_state_dict({k: v for k, v in state.items() if not k.startswith(prefix)})
    weight, bias = state[prefix + "weight"], state[prefix + "bias"]
    classifier = nn.Linear(weight.shape[1], weight.shape[0])
    classifier.load_state_dict({"weight": weight, "bias": bias})
    return LoadedModel(encoder.eval(), None, classifier.eval(), {"name": Path(where).name, **card}, str(where), LoadReport("torchvision", [], [], 0))


def load_model(source: str | Path, encoder: str | None = None) -> LoadedModel:
    """Load a run directory, a shipped model, or a checkpoint file (with ``encoder``)."""
    path = Path(source)
    if path.is_dir():
        return load_run(path)
    if path.is_file():
        if encoder is None:
            raise CheckpointError(f"{path.name} is a bare checkpoint file: say which encoder it is for (--encoder, one of {', '.join(ENCODERS)})")
        return load_foreign(path, encoder)
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
