"""The Embeddings page's parts: its controls, the maps, the focus with its neighbours, the selection, an uploaded
query and the downloads. ``pages/embeddings.py`` calls them in order; the charts themselves are in
:mod:`ssl_viz.ui.explorer`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st

from ssl_viz.analysis.embedding_metrics import MIN_POINTS, embedding_metrics
from ssl_viz.analysis.explorer import (
    ExplorerError,
    check_explorable,
    cosine_neighbours,
    count_text,
    embeddings_npz,
    neighbour_placement,
    procrustes_align,
    query_neighbours,
    selection_table,
)
from ssl_viz.analysis.images import make_grid, to_hwc_uint8
from ssl_viz.analysis.projection import TSNE_DEFAULT_PERPLEXITY, UMAP_DEFAULTS, kmeans_labels
from ssl_viz.cache import fingerprint
from ssl_viz.ui.data_views import PROJECTIONS, fitted_projector, project_with_spinner, sample_size_picker
from ssl_viz.ui.explorer import HOVER_MAX, TOOLTIP_CSS, VIEWS, MapData, color_values, load_map, map_thumbnails, neighbour_strip, read_event, vega_map, webgl_map
from ssl_viz.ui.loaders import get_dataset, get_model, view_split
from ssl_viz.ui.uploads import uploaded_image
from ssl_viz.ui.workspace import comparison_models

THUMBS_ON_MAP = 200  # images drawn on the map itself when asked (a fixed sample)


@dataclass
class Settings:
    """What the controls chose: projection ``method`` (shown name), ``dims``, ``n`` points, ``color``, the
    projector ``params``, the second encoder ``compare`` ("" for none) with display ``labels``, ``k`` neighbours."""

    method: str
    dims: int
    n: int
    color: str
    params: dict = field(default_factory=dict)
    compare: str = ""
    labels: dict = field(default_factory=dict)
    k: int = 10


def controls(ws, ds) -> Settings:
    """The page's controls (keys ``emb_*``, all in the page's link, :mod:`ssl_viz.ui.links`)."""
    try:  # ds is already every image of your own folder (view_split "all"): nothing to add
        n_train = 0 if view_split(ws.dataset) == "all" else len(get_dataset(ws.dataset, "train", ws.label))
    except Exception:  # noqa: BLE001 - a dataset without a train split maps its test split only
        n_train = 0
    c1, c2, c3, c4 = st.columns(4)
    method = c1.selectbox("Method", list(PROJECTIONS), key="emb_method")
    dims = c2.radio("Dimensions", [2, 3], horizontal=True, format_func=lambda d: f"{d}-D", key="emb_dims")
    n = sample_size_picker(c3, "Points", len(ds), key="emb_n", n_all=len(ds) + n_train if n_train else None)
    color = c4.selectbox("Colour by", ["label", *ds.factors, "k-means cluster"], key="emb_color")
    params: dict = {}
    with st.expander(f"{method} settings, neighbours shown, second encoder"):
        a, b, c = st.columns(3)
        if method == "UMAP":
            params["n_neighbors"] = a.slider("n_neighbors (local vs global structure)", 2, 100, UMAP_DEFAULTS["n_neighbors"], key="emb_neighbors")
            params["min_dist"] = b.slider("min_dist (how tightly points pack)", 0.0, 0.99, UMAP_DEFAULTS["min_dist"], 0.01, key="emb_min_dist")
        elif method == "t-SNE":
            params["perplexity"] = a.slider("perplexity (effective number of neighbours)", 2.0, 100.0, TSNE_DEFAULT_PERPLEXITY, 1.0,
                                            key="emb_perplexity")
        else:
            a.caption("PCA has no settings: the directions of largest variance of the unit embeddings.")
        k = c.slider("Neighbours shown for a clicked point", 1, 30, 10, key="emb_knn")
        options, labels, _ = comparison_models(ws.model, get_model(ws.model, ws.encoder).card.get("encoder", ""))
        if st.session_state.get("emb_compare") not in (None, "", *options):
            st.session_state["emb_compare"] = ""
        compare = st.selectbox("Second encoder: the same images side by side, its map aligned to this one (Procrustes)",
                               ["", *options[1:]], format_func=lambda o: "none" if not o else labels.get(o, o), key="emb_compare")
    return Settings(method, dims, n, color, params, compare or "", labels, k)


def load_or_stop(ws, s: Settings) -> tuple[MapData, MapData | None]:
    """The map's points under the workspace encoder (and the second one); one ``st.error`` ends the page when the
    embeddings cannot be computed or explored (NaN, constant)."""
    try:
        with st.spinner(f"Embedding {s.n:,} images…"):
            data = load_map(ws.model, ws.encoder, ws.dataset, ws.label, ws.representation, s.n)
            check_explorable(data.embeddings, f"the {ws.representation} embeddings of {get_model(ws.model, ws.encoder).name}")
            other = load_map(s.compare, None, ws.dataset, ws.label, ws.representation, s.n) if s.compare else None
            if other is not None:
                check_explorable(other.embeddings, f"the {ws.representation} embeddings of {s.labels.get(s.compare, s.compare)}")
    except ExplorerError as exc:
        st.error(str(exc))
        st.stop()
    except Exception as exc:  # noqa: BLE001 - a model that cannot embed this data must not take the page down
        st.error(f"Cannot embed {ws.dataset} with this model: {exc}")
        st.stop()
    return data, other


def focus_and_selection(ws, data: MapData) -> tuple[int | None, np.ndarray]:
    """The focused row (or None) and the selected rows, valid for this map (a different map forgets them; the first
    view of a link keeps its ``emb_focus``)."""
    state = st.session_state
    map_id = json.dumps([ws.model, ws.encoder, ws.dataset, ws.label, ws.representation, len(data)])
    if state.get("_emb_map_id") not in (None, map_id):
        state["emb_focus"], state["emb_selected"] = None, []
    state["_emb_map_id"] = map_id
    focus = state.get("emb_focus")
    focus = int(focus) if isinstance(focus, (int, np.integer)) and 0 <= int(focus) < len(data) else None
    selected = np.asarray(state.get("emb_selected") or [], dtype=np.int64)
    return focus, selected[(selected >= 0) & (selected < len(data))]


def focus_neighbours(s: Settings, data: MapData, other: MapData | None, focus: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The focus's ``(rows, cosine similarities)`` under each encoder (one entry per map; empty arrays without a focus)."""
    empty = (np.empty(0, np.int64), np.empty(0, np.float32))
    return [cosine_neighbours(m.embeddings, focus, s.k) if focus is not None else empty for m in (data, other) if m is not None]


def project(ws, s: Settings, data: MapData, other: MapData | None) -> tuple[np.ndarray, np.ndarray | None, float | None, dict]:
    """``(coords, coords of the second map aligned to the first or None, Procrustes disparity or None, cache key)``."""
    key = {"model": fingerprint(ws.model), "dataset": ws.dataset, "label": ws.label, "rep": ws.representation, "n": len(data)}
    coords = project_with_spinner(data.embeddings, key, s.method, s.dims, s.params)
    if other is None:
        return coords, None, None, key
    raw = project_with_spinner(other.embeddings, {**key, "model": fingerprint(s.compare)}, s.method, s.dims, s.params)
    aligned, disparity = procrustes_align(coords, raw)
    return coords, aligned, disparity, key


def query_panel(ws, s: Settings, ds, data: MapData, coords: np.ndarray, key: dict):
    """An uploaded image embedded and placed on the map: ``(position [dims] or None, (rows, similarities) or None)``.

    PCA and UMAP place it with their own ``transform`` of the fitted map; t-SNE, which has none, at the
    similarity-weighted mean of its neighbours' positions, and the caption says which.
    """
    with st.expander("Place your own image on the map"):
        image = uploaded_image("An image (converted to the dataset's channels and size)", "emb_upload", ds.channels, ds.image_size)
        if image is None:
            return None, None
        with st.spinner("Embedding and placing your image…"):
            q = get_model(ws.model, ws.encoder).embed_fn(ws.representation)(image.float() / 255).detach().numpy()
            rows, sims = query_neighbours(data.embeddings, q[0], s.k)
            if s.method == "t-SNE":
                xy = neighbour_placement(coords, rows, sims)
                how = "t-SNE has no out-of-sample map: placed at the similarity-weighted mean of its neighbours' positions"
            else:
                proj = fitted_projector(json.dumps(key, sort_keys=True, default=str), s.method, s.dims, json.dumps(s.params, sort_keys=True), data.embeddings)
                xy, how = proj.transform(q)[0], f"placed by {s.method}'s own transform of the fitted map"
        st.caption(f"Your image is the red diamond on the map: {how}.")
        return xy, (rows, sims)


def _on_chart(chart_key: str, coords: np.ndarray, renderer: str):
    def callback() -> None:
        clicked, rows = read_event(st.session_state.get(chart_key), coords, renderer)
        if clicked is not None:
            st.session_state["emb_focus"] = clicked
        if rows is not None:
            st.session_state["emb_selected"] = rows.tolist()
    return callback


def set_focus(row: int) -> None:
    """Focus map row ``row`` (a neighbour strip's button)."""
    st.session_state["emb_focus"] = int(row)


def draw_maps(ws, s: Settings, data: MapData, other: MapData | None, coords, coords_b, disparity, focus, neighbours, selected,
              query_xy) -> None:
    """The map (two side by side with a second encoder): images on hover up to :data:`HOVER_MAX` 2-D points, WebGL beyond."""
    state = st.session_state
    if s.dims == 3 or len(data) > HOVER_MAX:
        renderer = "webgl"
        if len(data) > HOVER_MAX:
            st.caption(f"{len(data):,} points drawn with WebGL: hover names a point; click it to see its image and neighbours.")
    else:
        if state.get("emb_view") not in VIEWS:
            state["emb_view"] = next(iter(VIEWS))
        renderer = VIEWS[st.radio("Map", list(VIEWS), horizontal=True, key="emb_view",
                                  help="Images on hover: a thumbnail per point, click and box. WebGL: faster, adds lasso.")]
    shown = min(THUMBS_ON_MAP, len(data))
    thumbs_on_map = s.dims == 2 and st.toggle(f"Draw {shown} of the images on the map" if shown < len(data) else "Draw the images on the map",
                                              key="emb_thumbs")
    n_clusters = st.slider("Clusters (k)", 2, 30, max(2, min(len(data.class_names), 30)), key="emb_k") if s.color == "k-means cluster" else 0
    values, names = color_values(data, s.color, lambda: kmeans_labels(data.embeddings, n_clusters))
    maps = [("A", data, coords, get_model(ws.model, ws.encoder).name)]
    if other is not None:
        maps.append(("B", other, coords_b, f"{Path(s.labels.get(s.compare, s.compare)).name} (aligned, Procrustes disparity {disparity:.2f})"))
    on_map = np.random.default_rng(0).choice(len(data), size=min(THUMBS_ON_MAP, len(data)), replace=False) if thumbs_on_map else None
    for (tag, mdata, mcoords, title), (nb, _), col in zip(maps, neighbours, st.columns(len(maps))):
        chart_key = f"emb_chart_{tag}_{renderer}_{s.dims}"
        q_xy = query_xy if tag == "A" else None
        title = title if other is not None else None
        with col:
            if renderer == "vega":
                st.html(TOOLTIP_CSS)
                thumbs = map_thumbnails(ws.dataset, ws.label, tuple(mdata.ids))
                chart = vega_map(mcoords, mdata, values, names, thumbs, focus, nb, selected, q_xy, title=title,
                                 height=560 if other is None else 480, images_at=on_map)
                st.altair_chart(chart, on_select=_on_chart(chart_key, mcoords, "vega"), selection_mode=["focus", "brush"], key=chart_key)
            else:
                fig = webgl_map(mcoords, mdata, values, names, s.color, focus, nb, selected, q_xy, title=title, images_at=on_map)
                if s.dims == 2:
                    st.plotly_chart(fig, on_select=_on_chart(chart_key, mcoords, "webgl"), selection_mode=("points", "box", "lasso"), key=chart_key)
                else:
                    st.plotly_chart(fig, key=chart_key)
    st.caption("Drag to rotate; clicking and box/lasso selection work in the 2-D map." if s.dims == 3 else
               ("Hover a point for its image, click it for its neighbours, drag a box to select; double-click clears the selection."
                if renderer == "vega" else "Hover a point for its label, click it for its image and neighbours, drag to zoom; for a box or "
                "lasso selection pick its tool in the chart's toolbar; double-click resets."))


def focus_panel(s: Settings, data: MapData, other: MapData | None, focus: int | None, neighbours, query_nn) -> None:
    """The focused image and its nearest neighbours (and under the second encoder); an uploaded query's neighbours."""
    if focus is not None:
        rows, sims = neighbours[0]
        st.subheader(f"Focus {data.ids[focus]} · {data.name(focus)}: its {len(rows)} nearest neighbours")
        left, right = st.columns([1, 6])
        left.image(data.picture(focus, 128), caption=f"{data.ids[focus]} · {data.name(focus)}")
        left.button("Clear focus", key="emb_clear_focus", on_click=lambda: st.session_state.update(emb_focus=None))
        with right:
            st.caption("Cosine similarity · label (ringed orange on the map); a neighbour's button moves the focus to it.")
            neighbour_strip(data, rows, sims, "emb_nb", set_focus)
            if other is not None:
                rows_b, sims_b = neighbours[1]
                st.caption(f"The same image's neighbours under {s.labels.get(s.compare, s.compare)}: "
                           f"{len(set(rows_b.tolist()) & set(rows.tolist()))} of {len(rows)} shared.")
                neighbour_strip(other, rows_b, sims_b, "emb_nb_b", set_focus)
    elif query_nn is None:
        st.info("Click a point on the map to see its nearest neighbours here.")
    if query_nn is not None:
        st.subheader("Your image's nearest neighbours")
        neighbour_strip(data, query_nn[0], query_nn[1], "emb_qnb", set_focus)


def selection_panel(ws, s: Settings, data: MapData, coords: np.ndarray, selected: np.ndarray) -> None:
    """The selection's class counts, its first images and a CSV of it; the embeddings as ``.npz``."""
    if len(selected):
        st.subheader(f"{len(selected):,} selected: {count_text(data.labels[selected], data.class_names)}")
        shown = selected[:96]
        side = int(data.image_of(0).shape[-1])
        grid = make_grid([to_hwc_uint8(data.image_of(int(r))) for r in shown], ncols=16, upscale=max(1, 48 // side))
        st.image(grid, caption=f"the first {len(shown)} of the selection" if len(selected) > len(shown) else None)
        table = selection_table(selected, data.ids, data.labels, data.class_names, coords)
        st.download_button(f"Download the selection ({len(selected):,} rows, CSV)", table.to_csv(index=False).encode(),
                           "selection.csv", "text/csv", key="emb_dl_sel")
    st.download_button(f"Download the {len(data):,} embeddings (.npz: embeddings, ids, labels, map coordinates)",
                       embeddings_npz(data.embeddings, data.ids, data.labels, data.class_names, coords, model=ws.model,
                                      dataset=ws.dataset, representation=ws.representation, projection=s.method),
                       "embeddings.npz", "application/octet-stream", key="emb_dl_npz")


def quality_metrics(ws, ds, data: MapData) -> None:
    """kNN top-1, uniformity and alignment of the map's test images (of every image of your own folder: ids
    ``all:i``) (Wang & Isola 2020), for maps up to 20,000 points."""
    part = "all" if view_split(ws.dataset) == "all" else "test"
    test_rows = np.asarray([r for r, d in enumerate(data.ids) if d.startswith(f"{part}:")], dtype=np.int64)
    if not MIN_POINTS <= len(test_rows) <= 20_000:
        return
    idx = np.asarray([int(data.ids[r].split(":")[1]) for r in test_rows])
    q = embedding_metrics(data.embeddings[test_rows], data.labels[test_rows] if ds.has_labels else None,
                          get_model(ws.model, ws.encoder).embed_fn(ws.representation), ds.images, idx)
    m1, m2, m3 = st.columns(3)
    if q.knn_top1 is not None:
        m1.metric(f"kNN top-1 (half / half of the {'map' if part == 'all' else 'test'} images)", f"{q.knn_top1:.1%}")
    m2.metric("Uniformity (lower = more spread)", f"{q.uniformity:.3f}")
    m3.metric("Alignment of 2 simclr views (lower = closer)", f"{q.alignment:.3f}")
