"""Plotly figure builders shared by the pages. Each returns a ``go.Figure`` and never calls ``st.*``.

Plotly hover labels cannot show images, so the scatter carries each point's
sample position in ``customdata``; a page shows the images of points picked
with box/lasso (``st.plotly_chart(..., on_select="rerun")``), see
:func:`selected_positions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Set3 + qualitative.Dark24
POSITIVE, NEGATIVE, ANCHOR = "#2ca02c", "#9aa5b1", "#d62728"


def _palette(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def projection_scatter(
    coords: np.ndarray,
    color: np.ndarray | None = None,
    color_names: Sequence[str] | None = None,
    color_title: str = "label",
    hover: Sequence[str] | None = None,
    categorical: bool = True,
    marker_size: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Scatter of a 2-D (``Scattergl``) or 3-D (``Scatter3d``) projection.

    Args:
        coords: ``[N, 2|3]``.
        color: ``[N]`` ints (categories, one trace each, so the legend toggles them) or floats.
        color_names: name of category value v is ``color_names[v]``.
        hover: ``[N]`` extra hover text per point.
        categorical: treat ``color`` as categories.

    Every point's ``customdata`` is its row in ``coords`` (for selections).
    """
    coords = np.asarray(coords)
    n, dim = coords.shape
    if dim not in (2, 3):
        raise ValueError(f"coords must be [N, 2] or [N, 3], got {coords.shape}")
    rows = np.arange(n)
    hover = np.asarray(hover if hover is not None else [f"#{i}" for i in rows], dtype=object)
    size = marker_size or (6 if n <= 1000 else 4 if n <= 5000 else 3)
    if dim == 3:
        size = max(2, size - 2)
    template = "%{text}<extra></extra>"

    def trace(mask, name, marker):
        common = dict(mode="markers", name=name, customdata=rows[mask], text=hover[mask], hovertemplate=template, marker=marker)
        if dim == 2:
            return go.Scattergl(x=coords[mask, 0], y=coords[mask, 1], **common)
        return go.Scatter3d(x=coords[mask, 0], y=coords[mask, 1], z=coords[mask, 2], **common)

    fig = go.Figure()
    if color is None:
        fig.add_trace(trace(np.ones(n, bool), "points", dict(size=size, color=_palette(0), opacity=0.8)))
    elif categorical:
        color = np.asarray(color)
        for j, value in enumerate(np.unique(color)):
            name = color_names[value] if color_names is not None and 0 <= int(value) < len(color_names) else str(value)
            name = "unlabelled" if int(value) < 0 and name == str(value) else name
            fig.add_trace(trace(color == value, str(name), dict(size=size, color=_palette(j), opacity=0.8)))
    else:
        marker = dict(size=size, color=np.asarray(color, dtype=float), colorscale="Viridis", showscale=True,
                      colorbar=dict(title=color_title), opacity=0.8)
        fig.add_trace(trace(np.ones(n, bool), color_title, marker))
    fig.update_layout(title=title, legend_title_text=color_title, height=600, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      dragmode="lasso" if dim == 2 else "orbit", legend=dict(itemsizing="constant"))
    if dim == 2:
        fig.update_xaxes(showticklabels=False, title=None)
        fig.update_yaxes(showticklabels=False, title=None, scaleanchor="x", scaleratio=1)
    else:
        fig.update_scenes(xaxis_showticklabels=False, yaxis_showticklabels=False, zaxis_showticklabels=False,
                          xaxis_title="", yaxis_title="", zaxis_title="")
    return fig


def selected_positions(selection) -> np.ndarray:
    """Rows (``customdata``) of the points in a Streamlit plotly selection state; empty when none."""
    if not selection:
        return np.empty(0, dtype=np.int64)
    sel = selection.get("selection", selection) if hasattr(selection, "get") else getattr(selection, "selection", {})
    points = sel.get("points", []) if hasattr(sel, "get") else []
    out = []
    for p in points:
        cd = p.get("customdata")
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        if cd is not None:
            out.append(int(cd))
    return np.unique(np.asarray(out, dtype=np.int64))


def similarity_heatmap(similarity: np.ndarray, positives: np.ndarray, labels: Sequence[str], anchor: int | None = None) -> go.Figure:
    """The 2N x 2N cosine-similarity matrix, positives outlined in green, the chosen anchor's row in red.

    The diagonal (a view with itself, always 1, never a candidate) is left blank and the colour
    range spans the off-diagonal values, so an untrained encoder whose cosines all lie near 1 still
    shows its structure; the colour bar gives the actual range.
    """
    sim = np.array(similarity, dtype=float)
    n2 = sim.shape[0]
    labels = list(labels)
    np.fill_diagonal(sim, np.nan)
    lo, hi = float(np.nanmin(sim)), float(np.nanmax(sim))
    if hi - lo < 1e-6:
        lo, hi = lo - 1e-3, hi + 1e-3
    fig = go.Figure(go.Heatmap(z=sim, x=labels, y=labels, zmin=lo, zmax=hi, colorscale="Viridis", hoverongaps=False,
                               colorbar=dict(title="cos"), hovertemplate="anchor %{y} · %{x}<br>cos %{z:.3f}<extra></extra>"))
    pos = np.asarray(positives)
    fig.add_trace(go.Scatter(x=[labels[j] for j in pos], y=labels, mode="markers", name="positive pair",
                             marker=dict(symbol="square-open", size=max(6, 360 // n2), color=POSITIVE, line=dict(width=3)),
                             hoverinfo="skip"))
    if anchor is not None:
        fig.add_shape(type="rect", x0=-0.5, x1=n2 - 0.5, y0=anchor - 0.5, y1=anchor + 0.5, line=dict(color=ANCHOR, width=3))
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=1.08),
                      xaxis=dict(side="top", tickangle=0, type="category"), yaxis=dict(autorange="reversed", type="category"))
    return fig


def softmax_bars(probabilities: np.ndarray, anchor: int, positive: int, labels: Sequence[str]) -> go.Figure:
    """One anchor's softmax over its 2N - 1 candidates; the positive in green, negatives grey, chance level dashed."""
    p = np.asarray(probabilities, dtype=float)
    cand = [k for k in range(len(p)) if k != anchor]
    colors = [POSITIVE if k == positive else NEGATIVE for k in cand]
    fig = go.Figure(go.Bar(x=[labels[k] for k in cand], y=p[cand], marker_color=colors,
                           hovertemplate="%{x}: p = %{y:.3f}<extra></extra>"))
    chance = 1.0 / max(1, len(cand))
    fig.add_hline(y=chance, line_dash="dash", line_color="#555", annotation_text=f"uniform 1/(2N-1) = {chance:.3f}")
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10),
                      yaxis=dict(title="p(candidate | anchor)", range=[0, min(1.0, max(float(p[cand].max()), chance) * 1.2)]),
                      xaxis=dict(title="candidate view (green: positive)", type="category"), title=f"softmax of anchor {labels[anchor]}")
    return fig


def precision_bars(table: pd.DataFrame, k: int) -> go.Figure:
    """Per-class mean precision@K (a :func:`~ssl_viz.analysis.retrieval.per_class_precision` table)."""
    fig = go.Figure(go.Bar(x=table["name"].astype(str), y=table["precision"], marker_color=[_palette(i) for i in range(len(table))],
                           customdata=table["queries"], hovertemplate="%{x}: P@" + str(k) + " = %{y:.3f} (%{customdata} queries)<extra></extra>"))
    mean = float((table["precision"] * table["queries"]).sum() / max(1, table["queries"].sum()))
    fig.add_hline(y=mean, line_dash="dash", annotation_text=f"mean {mean:.3f}")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(title=f"precision@{k}", range=[0, 1]),
                      xaxis=dict(title="class", type="category"))
    return fig


def add_thumbnails(fig: go.Figure, coords: np.ndarray, images: Sequence[np.ndarray], size_fraction: float = 0.035) -> go.Figure:
    """Draw small images at their 2-D positions (an "image map" of the projection).

    Args:
        coords: ``[n, 2]`` projected positions of the images.
        images: ``n`` arrays ``[H, W, 3]`` uint8, drawn centred on their points.
        size_fraction: thumbnail side as a fraction of the larger axis range.
    """
    from ssl_viz.analysis.images import png_data_uri

    coords = np.asarray(coords, dtype=float)
    if len(coords) == 0:
        return fig
    span = float(max(np.ptp(coords[:, 0]), np.ptp(coords[:, 1]), 1e-9))
    side = span * size_fraction
    fig.update_layout(images=[
        dict(source=png_data_uri(img), x=float(x), y=float(y), xref="x", yref="y", sizex=side, sizey=side,
             xanchor="center", yanchor="middle", layer="above", sizing="contain")
        for (x, y), img in zip(coords, images)
    ])
    return fig
