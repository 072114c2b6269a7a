"""Checkpoints made elsewhere: torchvision, MoCo (``module.encoder_q.``), SwAV (``module.``), DINO
(``teacher``/``student`` + ``backbone.``), lightly and solo-learn (``state_dict`` + ``backbone.``) key layouts
are recognised (also with ``torch.compile``'s ``_orig_mod.``), mapped onto an ssl-viz encoder, and
reported (missing / unexpected keys); a file that leaves encoder tensors missing is refused unless a
partial load is allowed. And the supervised ImageNet references built from torchvision weights found offline.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ssl_viz.checkpoint.report import CheckpointError, LoadedModel, LoadReport, check_finite
from ssl_viz.checkpoint.tensors import drop_compile_prefix, read_state_dict
from ssl_viz.encoders import ENCODERS, EncoderError, build_encoder

FOREIGN_PREFIXES = (
    "module.encoder_q.", "encoder_q.", "module.base_encoder.", "base_encoder.", "module.backbone.", "backbone.",
    "module.encoder.", "encoder.body.net.", "encoder.body.", "encoder.", "module.", "model.", "net.", "body.net.", "body.",
)
MAX_WIDTH = 1024  # largest base width of small-cnn / resnet18-cifar accepted from a checkpoint file
RESNET_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
COUNTERS = ("num_batches_tracked",)  # BatchNorm's step counters: unused in eval mode, often left out of files


def strip_prefixes(state: dict[str, torch.Tensor], target_keys: set[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Map foreign keys onto ``target_keys`` by removing known prefixes; returns (mapped, layout name).

    ``torch.compile``'s ``_orig_mod.`` is dropped first, wherever it sits (``module._orig_mod.encoder_q.conv1.weight``).
    """
    state, compiled = drop_compile_prefix(state)
    best, best_layout, best_hits = {}, "unknown", -1
    for prefix in ("",) + FOREIGN_PREFIXES:
        mapped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        renamed = {sequential_to_named(k): v for k, v in mapped.items()}
        for candidate, suffix in ((mapped, ""), (renamed, " (nn.Sequential of ResNet children, e.g. lightly)")):
            hits = len(set(candidate) & target_keys)
            if hits > best_hits:
                best, best_layout, best_hits = candidate, (prefix.rstrip(".") or "plain") + suffix, hits
    return best, best_layout + (" (torch.compile)" if compiled else "")


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


def load_foreign(path: str | Path, encoder_name: str, width: int | None = None, allow_partial: bool = False) -> LoadedModel:
    """Load a foreign checkpoint file into encoder ``encoder_name`` (keys mapped, report kept).

    Every tensor of the encoder must come from the file (BatchNorm's ``num_batches_tracked`` counters
    aside): a file of another architecture (a ResNet-50 read as a ResNet-18) leaves some of them random,
    which is refused unless ``allow_partial``; the :class:`LoadReport` lists what was missing and what was
    left over either way.

    Raises:
        CheckpointError: unreadable or unsafe file, no tensor matching, or (without ``allow_partial``)
            encoder tensors missing from the file or of another shape there.
    """
    if encoder_name not in ENCODERS:
        raise CheckpointError(f"unknown encoder {encoder_name!r}; choose one of: {', '.join(ENCODERS)}")
    state = read_state_dict(path)
    in_channels = infer_in_channels(state) if encoder_name in ("small-cnn", "small-cnn-k7", "resnet18-cifar", "vit-tiny") else 3
    if width is None and encoder_name in ("small-cnn", "small-cnn-k7", "resnet18-cifar"):
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
    report = LoadReport(
        layout=layout,
        missing=sorted(k for k in set(target) - set(usable) if not k.endswith(COUNTERS)),
        unexpected=sorted((set(mapped) - set(target)) | set(mismatched)),
        loaded=len(usable),
    )
    if report.missing and not allow_partial:
        raise CheckpointError(partial_load_message(Path(path).name, encoder_name, report, len(target)))
    module.load_state_dict(usable, strict=False)
    check_finite(encoder, path)
    card = {"name": Path(path).name, "method": "imported", "encoder": encoder_name, "in_channels": in_channels, "import_report": report.summary()}
    return LoadedModel(encoder.eval(), None, None, card, str(path), report)


def partial_load_message(name: str, encoder_name: str, report: LoadReport, n_target: int) -> str:
    """One line refusing a file that leaves ``report.missing`` of the encoder's ``n_target`` tensors random."""
    shown = ", ".join(report.missing[:3]) + (", ..." if len(report.missing) > 3 else "")
    extra = f"; {len(report.unexpected)} tensors of the file are unexpected" if report.unexpected else ""
    return (f"{name} does not fit encoder {encoder_name} ({report.layout} layout): {len(report.missing)} of the encoder's "
            f"{n_target} tensors are missing from it or of another shape ({shown}){extra}; is --encoder right? "
            "To use it anyway with those tensors left random, allow a partial load (--allow-partial)")


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
