"""Convolution kernels as pictures, and per-layer filter statistics.

First-layer filters of a trained network are readable directly: with RGB
inputs they show colour blobs and oriented edges (Krizhevsky et al. 2012;
Zeiler & Fergus 2014). Deeper kernels mix many input channels, so they are
shown one input channel at a time, or averaged over input channels.

Everything here reads weights only (``detach``), so it is safe on a shared,
cached model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import nn

from ssl_viz.analysis.images import colormap, make_grid
from ssl_viz.encoders import conv_layers

NORMALIZATIONS = ("filter", "global")


class KernelError(ValueError):
    """A layer or channel asked for does not exist; the message lists what does."""


def _first_conv(module: nn.Module) -> nn.Conv2d:
    if hasattr(module, "first_conv"):
        return module.first_conv()
    convs = conv_layers(module)
    if not convs:
        raise KernelError(f"{type(module).__name__} has no Conv2d layer")
    return next(iter(convs.values()))


def _minmax(w: torch.Tensor, per_filter: bool) -> torch.Tensor:
    """Scale ``[N, ...]`` to [0, 1] per filter (dim 0) or over the whole tensor."""
    if per_filter:
        flat = w.flatten(1)
        lo = flat.min(1).values.view(-1, *[1] * (w.ndim - 1))
        hi = flat.max(1).values.view(-1, *[1] * (w.ndim - 1))
    else:
        lo, hi = w.min(), w.max()
    return torch.where(hi > lo, (w - lo) / (hi - lo).clamp_min(1e-12), torch.full_like(w, 0.5))


def _check_norm(normalize: str) -> None:
    if normalize not in NORMALIZATIONS:
        raise KernelError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")


def first_layer_filters(encoder: nn.Module, normalize: str = "filter") -> np.ndarray:
    """The first convolution's filters as images, ``[N, k, k, 3]`` uint8.

    RGB filters (3 input channels) are shown in colour, grayscale filters
    (1 input channel) in gray; any other input count is averaged to gray.

    Args:
        encoder: an :class:`~ssl_viz.encoders.Encoder` or any module with a Conv2d.
        normalize: ``"filter"`` min-max scales each filter on its own (shapes
            visible); ``"global"`` uses one scale for all (strengths comparable).
    """
    _check_norm(normalize)
    w = _first_conv(encoder).weight.detach().float().cpu()  # [N, Cin, k, k]
    if w.shape[1] != 3:
        w = w.mean(dim=1, keepdim=True)
    w = _minmax(w, normalize == "filter")
    img = (w * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # [N, k, k, Cin]
    if img.shape[-1] == 1:
        img = img.expand(-1, -1, -1, 3)
    return img.contiguous().numpy()


def conv_filters(module: nn.Module, layer_name: str, in_channel: int | None = None, normalize: str = "filter",
                 signed: bool = True) -> np.ndarray:
    """Filters of any conv layer as images ``[N_out, k, k, 3]`` uint8.

    Args:
        module: the network (layer names as in ``module.named_modules()``).
        layer_name: a conv layer's qualified name, e.g. ``"body.layer2.0.conv1"``.
        in_channel: show the slice for this input channel; None averages over input channels.
        normalize: ``"filter"`` or ``"global"`` scaling (see :func:`first_layer_filters`).
        signed: blue-white-red colours centred at 0 (weights are signed); else gray min-max.
    """
    _check_norm(normalize)
    convs = conv_layers(module)
    if layer_name not in convs:
        raise KernelError(f"no conv layer {layer_name!r}; choose from: {', '.join(list(convs)[:12])}{' …' if len(convs) > 12 else ''}")
    w = convs[layer_name].weight.detach().float().cpu()  # [N, Cin/groups, k, k]
    if in_channel is None:
        w = w.mean(dim=1)
    else:
        if not 0 <= in_channel < w.shape[1]:
            raise KernelError(f"{layer_name} has {w.shape[1]} input channel(s) per filter; got in_channel={in_channel}")
        w = w[:, in_channel]
    if signed:
        scale = w.flatten(1).abs().max(1).values.view(-1, 1, 1) if normalize == "filter" else w.abs().max()
        scaled = torch.where(scale > 0, w / scale.clamp_min(1e-12), torch.zeros_like(w))
        return colormap(((scaled + 1) / 2).numpy(), "rdbu")
    gray = (_minmax(w, normalize == "filter") * 255).round().to(torch.uint8)
    return gray.unsqueeze(-1).expand(-1, -1, -1, 3).contiguous().numpy()


def filter_statistics(encoder: nn.Module, dead_ratio: float = 0.05) -> pd.DataFrame:
    """One row per conv layer: shape, parameter count and weight statistics.

    Columns: ``layer, out_channels, in_channels, kernel, stride, groups, params,
    l2_mean, l2_std, mean_abs_w, near_dead_frac``. A filter is *near dead*
    when its L2 norm is below ``dead_ratio`` times the layer's largest filter
    norm (weight decay shrinks unused filters towards 0).
    """
    rows = []
    for name, conv in conv_layers(encoder).items():
        w = conv.weight.detach().float().cpu()
        norms = w.flatten(1).norm(dim=1)
        top = float(norms.max()) if norms.numel() else 0.0
        rows.append({
            "layer": name,
            "out_channels": int(w.shape[0]),
            "in_channels": int(w.shape[1] * conv.groups),
            "kernel": "x".join(str(k) for k in conv.kernel_size),
            "stride": int(conv.stride[0]),
            "groups": int(conv.groups),
            "params": int(w.numel()),
            "l2_mean": float(norms.mean()),
            "l2_std": float(norms.std()) if norms.numel() > 1 else 0.0,
            "mean_abs_w": float(w.abs().mean()),
            "near_dead_frac": float((norms < dead_ratio * top).float().mean()) if top > 0 else 1.0,
        })
    return pd.DataFrame(rows)


def filter_norms(encoder: nn.Module) -> pd.DataFrame:
    """Long table ``layer, filter, l2`` of every conv filter's L2 norm (for distribution plots)."""
    parts = []
    for name, conv in conv_layers(encoder).items():
        norms = conv.weight.detach().float().cpu().flatten(1).norm(dim=1).numpy()
        parts.append(pd.DataFrame({"layer": name, "filter": np.arange(len(norms)), "l2": norms}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["layer", "filter", "l2"])


def filter_norms_figure(norms: dict[str, pd.DataFrame]) -> go.Figure:
    """Box plot of filter L2 norms per layer, one colour per model (``{model label: filter_norms(...)}``)."""
    fig = go.Figure()
    for label, df in norms.items():
        fig.add_trace(go.Box(x=df["layer"], y=df["l2"], name=label, boxpoints=False))
    fig.update_layout(boxmode="group", yaxis_title="filter L2 norm", xaxis_title="conv layer", height=360,
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h"))
    return fig


def filter_grid(filters: np.ndarray, ncols: int = 16, size: int = 24) -> np.ndarray:
    """Tile ``[N, k, k, 3]`` filters into one image, each filter upscaled (nearest) to about ``size`` px."""
    k = filters.shape[1]
    return make_grid(filters, ncols=ncols, pad=1, pad_value=255, upscale=max(1, size // k))
