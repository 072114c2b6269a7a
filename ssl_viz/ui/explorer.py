"""The Embeddings page's map: points tied to their images, a focus with its neighbours, selections, two encoders.

Two renderers, picked by size (the user may switch):

* **images on hover** (Vega-Lite via ``st.altair_chart``, up to :data:`HOVER_MAX` points): every point carries a
  thumbnail, shown in its tooltip (vega-tooltip renders a tooltip field titled ``image`` as a picture);
  click a point to focus it, drag a box to select.
* **WebGL** (plotly ``Scattergl`` via ``st.plotly_chart``): any size (the whole of Fashion-MNIST, 70,000 points),
  box / lasso selection, click a point to focus it; hover shows the point's label and index.

The focus (a map row) and the selected rows live in ``st.session_state`` (``emb_focus``, ``emb_selected``),
set by the charts' selection callbacks and by the neighbour strip's buttons, so a rerun that redraws the
map (to highlight the neighbours) keeps them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st
import torch
from PIL import Image

from ssl_viz.analysis.images import to_hwc_uint8, upscale
from ssl_viz.ui.plots import PALETTE, add_thumbnails, projection_scatter

HOVER_MAX = 10_000          # points up to which the map carries an image per point (tooltips)
THUMB_PNG_MAX_SIDE = 32     # images up to this side go into tooltips as lossless PNG; larger ones as JPEG
THUMB_SIDE = 48             # side of the JPEG thumbnail of a larger image
FOCUS, NEIGHBOUR, QUERY = "#111111", "#ff7f0e", "#d62728"
VIEWS = {"images on hover": "vega", "WebGL (any size, lasso)": "webgl"}
# vega-tooltip draws a tooltip image at its own size (28 px for Fashion-MNIST): show it at 112 px, pixels kept sharp
TOOLTIP_CSS = "<style>#vg-tooltip-element img{width:112px;height:auto;image-rendering:pixelated;display:block;margin:0 auto 4px}</style>"


@dataclass
class MapData:
    """The points of one map: embeddings and what each point is.

    Attributes:
        embeddings: ``[N, D]`` float32.
        labels: ``[N]`` int64 class ids (-1: unlabelled). class_names: names of the class ids.
        ids: ``[N]`` what each point is: ``"test:12"`` (split and position in a built-in dataset or folder split).
        factors: ``{factor: [N] int}``; factor_names: value names per factor.
        image_of: ``row -> uint8 [C, H, W]`` tensor of a point's image.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    ids: list[str]
    factors: dict[str, np.ndarray]
    factor_names: dict[str, list[str]]
    image_of: Callable[[int], torch.Tensor]

    def __len__(self) -> int:
        return len(self.embeddings)

    def name(self, row: int) -> str:
        y = int(self.labels[row])
        return self.class_names[y] if 0 <= y < len(self.class_names) else "unlabelled"

    def picture(self, row: int, side: int = 96) -> np.ndarray:
        """A point's image as ``[H, W, 3]`` uint8, upscaled (nearest) to about ``side`` pixels."""
        return upscale(to_hwc_uint8(self.image_of(int(row))), side)


def thumbnail_uri(image: np.ndarray) -> str:
    """A small ``data:`` URI of ``[H, W, 3]`` uint8 for a tooltip: PNG up to :data:`THUMB_PNG_MAX_SIDE` px, else a
    :data:`THUMB_SIDE` px JPEG (so 10,000 colour thumbnails stay a few MB)."""
    pil = Image.fromarray(image)
    buf = io.BytesIO()
    if max(pil.size) <= THUMB_PNG_MAX_SIDE:
        pil = pil.convert("L") if image.ndim == 3 and (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all() else pil
        pil.save(buf, format="PNG")
        mime = "png"
    else:
        pil.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR)
        pil.convert("RGB").save(buf, format="JPEG", quality=80)
        mime = "jpeg"
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def color_values(data: MapData, color: str, kmeans: Callable[[], np.ndarray]) -> tuple[np.ndarray, list[str] | None]:
    """``(values [N], names)`` of the chosen colouring: ``label``, a factor, or k-means clusters (``kmeans()``)."""
    if color == "label":
        return data.labels, data.class_names
    if color in data.factors:
        return np.asarray(data.factors[color]), data.factor_names.get(color)
    return kmeans(), None


def _group_names(values: np.ndarray, names: Sequence[str] | None) -> np.ndarray:
    values = np.asarray(values)
    out = np.empty(len(values), dtype=object)
    for v in np.unique(values):
        iv = int(v)
        out[values == v] = names[iv] if names is not None and 0 <= iv < len(names) else ("unlabelled" if iv < 0 else f"cluster {iv}")
    return out


def vega_map(coords: np.ndarray, data: MapData, values: np.ndarray, names: Sequence[str] | None, thumbs: Sequence[str],
             focus: int | None, neighbours: np.ndarray, selected: np.ndarray, query_xy: np.ndarray | None,
             title: str | None = None, height: int = 560, images_at: np.ndarray | None = None):
    """The Vega-Lite map (an ``alt.LayerChart``): one circle per point coloured by group, its image in the tooltip,
    a ``focus`` point selection (click, projected on ``row``) and a ``brush`` interval selection (drag); the
    focus as a black ring, its neighbours ringed orange, selected rows drawn larger, an uploaded query as a red diamond;
    with ``images_at`` (rows), those points' images drawn on the map."""
    import altair as alt

    groups = _group_names(values, names)
    order = list(dict.fromkeys(groups[np.argsort(values, kind="stable")]))
    df = pd.DataFrame({"x": coords[:, 0].astype(float), "y": coords[:, 1].astype(float), "row": np.arange(len(coords)),
                       "group": groups, "id": data.ids, "image": thumbs,
                       "label": [data.name(r) for r in range(len(coords))]})
    size = 36 if len(df) <= 1000 else 18 if len(df) <= 5000 else 10
    focus_sel = alt.selection_point(name="focus", fields=["row"], on="click", clear="dblclick", empty=False)
    brush = alt.selection_interval(name="brush", encodings=["x", "y"], clear="dblclick")
    x = alt.X("x:Q", axis=None, scale=alt.Scale(zero=False, nice=False))
    y = alt.Y("y:Q", axis=None, scale=alt.Scale(zero=False, nice=False))
    tooltip = [alt.Tooltip("image:N", title="image"), alt.Tooltip("label:N", title="label"), alt.Tooltip("id:N", title="index")]
    color = alt.Color("group:N", scale=alt.Scale(domain=order, range=[PALETTE[i % len(PALETTE)] for i in range(len(order))]),
                      legend=alt.Legend(title=None, orient="right", symbolLimit=40))
    dim = len(selected) > 0
    points = alt.Chart(df).mark_circle(size=size).encode(
        x=x, y=y, color=color, tooltip=tooltip,
        opacity=alt.value(0.35 if dim else 0.8),
    ).add_params(focus_sel, brush)
    layers = [points]
    if images_at is not None and len(images_at):
        layers.append(alt.Chart(df.iloc[np.asarray(images_at)]).mark_image(width=24, height=24).encode(x=x, y=y, url="image:N", tooltip=tooltip))
    if dim:
        layers.append(alt.Chart(df.iloc[selected]).mark_circle(size=size * 2.5, opacity=1.0).encode(x=x, y=y, color=color, tooltip=tooltip))
    if len(neighbours):
        layers.append(alt.Chart(df.iloc[neighbours]).mark_point(size=size * 8, strokeWidth=2.5, color=NEIGHBOUR, filled=False)
                      .encode(x=x, y=y, tooltip=tooltip))
    if focus is not None:
        layers.append(alt.Chart(df.iloc[[focus]]).mark_point(size=size * 16, strokeWidth=3.5, color=FOCUS, filled=False)
                      .encode(x=x, y=y, tooltip=tooltip))
    if query_xy is not None:
        layers.append(alt.Chart(pd.DataFrame({"x": [float(query_xy[0])], "y": [float(query_xy[1])], "what": ["your image"]}))
                      .mark_point(shape="diamond", size=500, strokeWidth=2, color=QUERY, filled=True)
                      .encode(x=x, y=y, tooltip=[alt.Tooltip("what:N", title="query")]))
    return alt.layer(*layers).properties(height=height, title=title or "").configure_view(strokeWidth=0)


def webgl_map(coords: np.ndarray, data: MapData, values: np.ndarray, names: Sequence[str] | None, color_title: str,
              focus: int | None, neighbours: np.ndarray, selected: np.ndarray, query_xy: np.ndarray | None, title: str | None = None,
              images_at: np.ndarray | None = None):
    """The plotly map (``Scattergl`` in 2-D, ``Scatter3d`` in 3-D): hover names the label and index; the focus,
    its neighbours and an uploaded query drawn as extra traces (their ``customdata`` is -1, so a box never picks them)."""
    import plotly.graph_objects as go

    hover = [f"{data.ids[r]} · {data.name(r)}" for r in range(len(coords))]
    fig = projection_scatter(coords, values, names, color_title=color_title, hover=hover, title=title,
                             categorical=names is not None or values.dtype.kind in "iu")
    dim = coords.shape[1]

    def extra(rows_xy: np.ndarray, name: str, marker: dict, text: Sequence[str]):
        common = dict(mode="markers", name=name, marker=marker, text=list(text), hovertemplate="%{text}<extra></extra>",
                      customdata=np.full(len(rows_xy), -1))
        if dim == 2:
            fig.add_trace(go.Scattergl(x=rows_xy[:, 0], y=rows_xy[:, 1], **common))
        else:
            fig.add_trace(go.Scatter3d(x=rows_xy[:, 0], y=rows_xy[:, 1], z=rows_xy[:, 2], **common))

    if len(selected):  # ringed thinly; a large selection only by its outline colour, so the classes stay readable
        width = 1.2 if len(selected) <= 2000 else 0.4
        extra(coords[selected], "selected", dict(size=7, color="rgba(0,0,0,0)", line=dict(color="#222", width=width)), [hover[r] for r in selected])
    if len(neighbours):
        extra(coords[neighbours], "neighbours", dict(size=14, color="rgba(0,0,0,0)", line=dict(color=NEIGHBOUR, width=3)), [hover[r] for r in neighbours])
    if focus is not None:
        extra(coords[[focus]], "focus", dict(size=20, color="rgba(0,0,0,0)", line=dict(color=FOCUS, width=4)), [hover[focus]])
    if query_xy is not None:
        marker = dict(size=16, symbol="diamond", color=QUERY, line=dict(color="white", width=1.5))
        extra(np.asarray(query_xy, dtype=float).reshape(1, -1), "your image", marker, ["your image"])
    if images_at is not None and len(images_at) and dim == 2:
        add_thumbnails(fig, coords[images_at], [to_hwc_uint8(data.image_of(int(r))) for r in images_at])
    if dim == 2:
        fig.update_layout(dragmode="zoom")  # clicks pick a point in zoom mode (plotly drops them in lasso and box modes)
    return fig


def rows_in_box(coords: np.ndarray, box: dict) -> np.ndarray:
    """Rows whose ``(x, y)`` lie inside a Vega interval selection ``{"x": [lo, hi], "y": [lo, hi]}`` (either order)."""
    if not box or "x" not in box or "y" not in box:
        return np.empty(0, dtype=np.int64)
    (x0, x1), (y0, y1) = sorted(box["x"][:2]), sorted(box["y"][:2])
    inside = (coords[:, 0] >= x0) & (coords[:, 0] <= x1) & (coords[:, 1] >= y0) & (coords[:, 1] <= y1)
    return np.flatnonzero(inside).astype(np.int64)


def read_event(event, coords: np.ndarray, renderer: str) -> tuple[int | None, np.ndarray | None]:
    """``(clicked row or None, selected rows or None)`` from a chart's selection state (None: not in this event).

    Vega: ``selection.focus`` is ``[{"row": r}]`` after a click, ``selection.brush`` a box. Plotly: a selection
    with points but no box or lasso shape is a click on one point; with a shape, the points inside it.
    """
    sel = (event or {}).get("selection", {}) if hasattr(event or {}, "get") else {}
    if renderer == "vega":
        clicked = [p.get("row") for p in (sel.get("focus") or []) if isinstance(p, dict) and p.get("row") is not None]
        box = sel.get("brush") or {}
        return (int(clicked[0]) if clicked else None), (rows_in_box(coords, box) if box else np.empty(0, dtype=np.int64))
    points = [p.get("customdata") for p in sel.get("points", []) if isinstance(p, dict)]
    points = [int(c[0] if isinstance(c, (list, tuple)) else c) for c in points if c is not None]
    points = [p for p in points if p >= 0]
    shapes = bool(sel.get("box")) or bool(sel.get("lasso"))
    if points and not shapes and len(points) == 1:
        return points[0], None
    return None, np.unique(np.asarray(points, dtype=np.int64))


def neighbour_strip(data: MapData, rows: np.ndarray, sims: np.ndarray, key: str, on_focus: Callable[[int], None] | None,
                    per_row: int = 10) -> None:
    """The neighbours as images with their cosine similarity and label; under each a button that focuses it."""
    for start in range(0, len(rows), per_row):
        cols = st.columns(per_row)
        for col, r, s in zip(cols, rows[start:start + per_row], sims[start:start + per_row]):
            col.image(data.picture(int(r)), caption=f"{s:.3f} · {data.name(int(r))} · {data.ids[int(r)]}", width="stretch")
            if on_focus is not None:
                col.button("focus", key=f"{key}_{int(r)}", on_click=on_focus, args=(int(r),),
                           help=f"Focus {data.ids[int(r)]}", width="stretch")


def map_splits(n_test: int, n_train: int, n_points: int, first: str = "test") -> list[tuple[str, int]]:
    """Which embeddings make a map of ``n_points``: ``[("test", n)]`` (a fixed sample of the test split), or, past
    the test split's size, every image: ``[("train", n_train), ("test", n_test)]``. With ``first="all"`` (your own
    folder: ``n_test`` is then every image) one part, ``[("all", n)]``."""
    if n_points <= n_test or n_train == 0 or first == "all":
        return [(first, min(n_points, n_test))]
    return [("train", n_train), ("test", n_test)]


def load_map(source: str, encoder: str | None, dataset: str, label: str | None, representation: str, n_points: int) -> MapData:
    """The :class:`MapData` of ``n_points`` images of ``dataset`` under one encoder (embeddings cached on disk by
    :func:`ssl_viz.ui.loaders.get_embeddings`). Raises what loading or embedding raises."""
    from ssl_viz.ui.loaders import get_dataset, get_embeddings, view_split

    first = view_split(dataset)  # "all" for your own folder: every image, one part
    test = get_dataset(dataset, first, label)
    n_train = 0
    if n_points > len(test) and first == "test":
        try:
            n_train = len(get_dataset(dataset, "train", label))
        except Exception:  # noqa: BLE001 - no train split: the test split is all there is
            n_train = 0
    parts = []
    for split, n in map_splits(len(test), n_train, n_points, first):
        ds = test if split == first else get_dataset(dataset, "train", label)
        emb, idx = get_embeddings(source, dataset, split, representation, n, encoder)
        parts.append((split, ds, emb, idx))
    embeddings = np.concatenate([p[2] for p in parts]) if len(parts) > 1 else parts[0][2]
    labels = np.concatenate([p[1].labels[torch.as_tensor(p[3])].numpy() for p in parts])
    ids = [f"{split}:{i}" for split, _, _, idx in parts for i in idx]
    factors = {f: np.concatenate([np.asarray(p[1].factors[f])[p[3]] for p in parts]) for f in test.factors}
    offsets = np.cumsum([0] + [len(p[3]) for p in parts])

    def image_of(row: int) -> torch.Tensor:
        part = int(np.searchsorted(offsets, row, side="right") - 1)
        _, ds, _, idx = parts[part]
        return ds.images[int(idx[row - offsets[part]])]

    return MapData(embeddings=embeddings, labels=labels, class_names=list(test.class_names), ids=ids, factors=factors,
                   factor_names=dict(test.factor_names), image_of=image_of)


@st.cache_data(max_entries=4, show_spinner=False)
def map_thumbnails(dataset: str, label: str | None, ids: tuple[str, ...]) -> list[str]:
    """Tooltip thumbnails (:func:`thumbnail_uri`) of the points ``ids`` (``"split:index"``), cached per map."""
    from ssl_viz.ui.loaders import get_dataset

    images = {split: get_dataset(dataset, split, label).images for split in {ident.split(":")[0] for ident in ids}}  # one lookup per split
    return [thumbnail_uri(to_hwc_uint8(images[split][int(index)])) for split, index in (ident.split(":") for ident in ids)]
