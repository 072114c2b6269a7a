"""Feature maps of any layer, captured with scoped forward hooks.

>>> with FeatureMapRecorder(encoder, ["body.block2"]) as rec:
...     encoder(x)
>>> rec.maps["body.block2"].shape      # [B, C, H, W]

The recorder removes its hooks on exit, exceptions included, so a cached
model shared by every browser session is never left with hooks. It records
only forward passes run by the thread that opened it (another session's
forward pass through the same shared model is ignored).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch
from torch import nn

from ssl_viz.analysis.images import colormap, make_grid, normalize_map
from ssl_viz.encoders import conv_layers

SORTS = ("mean", "max", "index")


class FeatureMapError(ValueError):
    """A layer or channel asked for does not exist; the message lists what does."""


def resolve_layer(encoder: nn.Module, name: str) -> tuple[str, nn.Module]:
    """``(qualified name, module)`` for a module name of ``encoder.named_modules()`` or a stage name.

    Stage names (``encoder.stage_names()``, e.g. ``"layer2"``, ``"block3"``) are
    looked up under ``body.`` / ``body.net.``; a ResNet ``stem`` maps to the
    module that ends it.
    """
    modules = dict(encoder.named_modules())
    candidates = [name, f"body.{name}", f"body.net.{name}"]
    if name == "stem":
        candidates += ["body.net.maxpool", "body.relu"]
    for cand in candidates:
        if cand and cand in modules:
            return cand, modules[cand]
    stages = ", ".join(getattr(encoder, "stage_names", lambda: [])())
    raise FeatureMapError(f"no layer {name!r} in {getattr(encoder, 'name', type(encoder).__name__)}; "
                          f"try a stage ({stages}) or a conv layer")


def stage_layers(encoder: nn.Module) -> dict[str, str]:
    """``{stage name: qualified module name}`` for the stages that are hookable modules."""
    out = {}
    for stage in getattr(encoder, "stage_names", lambda: [])():
        try:
            out[stage] = resolve_layer(encoder, stage)[0]
        except FeatureMapError:
            continue
    return out


def layer_choices(encoder: nn.Module) -> list[str]:
    """Layers worth offering in a picker: the stages, then every conv layer (qualified names)."""
    stages = list(stage_layers(encoder).values())
    return stages + [n for n in conv_layers(encoder) if n not in stages]


def _as_map(output) -> torch.Tensor:
    """A hook's output as ``[B, C, H, W]``: first element of tuples; ViT tokens ``[B, 1+g*g, D]`` -> grid."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    t = output.detach()
    if t.ndim == 3:
        b, n, d = t.shape
        g = math.isqrt(n - 1)
        if g * g == n - 1:
            t = t[:, 1:].transpose(1, 2).reshape(b, d, g, g)
    return t.clone()


class FeatureMapRecorder:
    """Context manager that records the outputs of named modules during forward passes.

    Attributes:
        maps: ``{layer name as given: tensor [B, C, H, W]}`` of the last forward pass.
    """

    def __init__(self, encoder: nn.Module, layers: list[str]) -> None:
        self.encoder = encoder
        self.layers = list(layers)
        self.targets = {name: resolve_layer(encoder, name)[1] for name in self.layers}
        self.maps: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._thread = None

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if threading.get_ident() == self._thread:
                self.maps[name] = _as_map(output)
        return hook

    def __enter__(self) -> FeatureMapRecorder:
        self._thread = threading.get_ident()
        try:
            for name, module in self.targets.items():
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, *exc) -> None:
        self.remove()


def capture_feature_maps(encoder: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Run ``encoder(x)`` once and return ``{layer: feature map [B, C, H, W]}`` for each named layer."""
    with torch.no_grad(), FeatureMapRecorder(encoder, layers) as rec:
        encoder(x)
    missing = [name for name in layers if name not in rec.maps]
    if missing:
        raise FeatureMapError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
    return rec.maps


def channel_order(fmap: torch.Tensor, sort_by: str = "mean") -> np.ndarray:
    """Channel indices of ``[C, H, W]`` by decreasing mean (or max) activation, or in index order."""
    if sort_by not in SORTS:
        raise FeatureMapError(f"sort_by must be one of {SORTS}, got {sort_by!r}")
    c = fmap.shape[0]
    if sort_by == "index":
        return np.arange(c)
    flat = torch.as_tensor(fmap).float().flatten(1)
    score = flat.mean(1) if sort_by == "mean" else flat.max(1).values
    return torch.argsort(score, descending=True, stable=True).numpy()


def activation_grid(fmap: torch.Tensor, max_channels: int = 64, sort_by: str = "mean", ncols: int = 8,
                    size: int = 64, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Tile the channels of one feature map ``[C, H, W]`` into an image.

    Args:
        fmap: one image's feature map.
        max_channels: show at most this many channels (the first after sorting).
        sort_by: ``"mean"``/``"max"`` (most active first) or ``"index"``.
        ncols: channels per row.
        size: each channel is upscaled (nearest) to about this many pixels.
        per_channel: min-max scale each channel on its own (else one scale for all).

    Returns:
        (grid ``[H', W', 3]`` uint8 in the inferno colormap, channel index of each tile).
    """
    fmap = torch.as_tensor(fmap).detach().float().cpu()
    if fmap.ndim != 3:
        raise FeatureMapError(f"expected one feature map [C, H, W], got {tuple(fmap.shape)}")
    order = channel_order(fmap, sort_by)[:max_channels]
    chosen = fmap[torch.as_tensor(order)]
    if per_channel:
        tiles = np.stack([normalize_map(m) for m in chosen])
    else:
        tiles = normalize_map(chosen)
    images = colormap(tiles)  # [n, H, W, 3]
    factor = max(1, size // max(fmap.shape[1:]))
    return make_grid(images, ncols=ncols, pad=2, upscale=factor), order


@torch.no_grad()
def layer_scores(encoder: nn.Module, images: torch.Tensor, layer: str, batch_size: int = 128,
                 reduce: str = "mean", progress=None) -> np.ndarray:
    """How strongly each image activates each channel of ``layer``: mean (or max) over its map, ``[N, C]``.

    ``images``: uint8 ``[N, C, H, W]`` (or float in [0, 1]); ``progress(fraction)`` is called per batch.
    """
    if reduce not in ("mean", "max"):
        raise FeatureMapError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    scores = []
    n = len(images)
    with FeatureMapRecorder(encoder, [layer]) as rec:
        for start in range(0, n, batch_size):
            batch = images[start:start + batch_size]
            encoder(batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float())
            m = rec.maps[layer].flatten(2)  # [b, C, H*W]
            scores.append(m.mean(2) if reduce == "mean" else m.amax(2))
            if progress is not None:
                progress(min(1.0, (start + len(batch)) / n))
    return torch.cat(scores).numpy()


def top_channel_images(scores: np.ndarray, channel: int, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """From ``layer_scores`` ``[N, C]``: the ``k`` rows with the highest score for ``channel`` (indices, scores)."""
    if not 0 <= channel < scores.shape[1]:
        raise FeatureMapError(f"the layer has {scores.shape[1]} channels; got channel={channel}")
    column = scores[:, channel]
    order = np.argsort(-column, kind="stable")[:k]
    return order, column[order]


def top_activating(encoder: nn.Module, images: torch.Tensor, layer: str, channel: int, k: int = 16,
                   batch_size: int = 128, reduce: str = "mean", progress=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` images that activate ``channel`` of ``layer`` most: (indices into ``images``, scores), best first."""
    return top_channel_images(layer_scores(encoder, images, layer, batch_size, reduce, progress), channel, k)


def load_image(file, channels: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """An image file (path or file-like, e.g. an upload) as float ``[1, channels, H, W]`` in [0, 1].

    Decoded as a dataset file is (:func:`ssl_viz.data.decode.decode_image`: EXIF orientation, 16-bit
    scaling, transparency over white, grayscale or RGB to match ``channels``), and, given ``size`` = (H, W),
    short side resized and centre-cropped to it (else kept at its own size).
    Raises :class:`FeatureMapError` when the file is not a readable image.
    """
    from ssl_viz.data.decode import ImageDecodeError, channels_mode, decode_image, open_image

    try:
        if size is None:
            with open_image(file) as img:
                size = (img.height, img.width)
                if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees swaps the sides
                    size = (img.width, img.height)
            if hasattr(file, "seek"):
                file.seek(0)
        array = decode_image(file, size, channels_mode(channels))
    except (ImageDecodeError, ValueError) as exc:
        raise FeatureMapError(f"not a readable image ({exc.__class__.__name__}: {exc})"[:300]) from exc
    return (torch.from_numpy(array).float() / 255.0).unsqueeze(0)
