"""Widgets and guards shared by the data views (Pairs, Negatives & bias, Embeddings, Retrieval)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from ssl_viz.analysis.projection import ProjectionError, is_projection_cached, project_cached, umap_is_warm
from ssl_viz.data import display_title
from ssl_viz.ui.loaders import get_dataset, get_model
from ssl_viz.ui.workspace import current_workspace

SAMPLE_SIZES = (250, 500, 1000, 2000, 5000, 10000)   # offered sample sizes; more than the data is capped at its size
DEFAULT_SAMPLE = 2000
MAX_PRECISION_QUERIES = 10_000  # Retrieval's per-class figures: every bank image as a query up to this many, else a seeded draw
PROJECTIONS = {"UMAP": "umap", "t-SNE": "tsne", "PCA": "pca"}   # shown name -> ssl_viz.analysis.projection method


def sample_size_picker(container, label: str, n_total: int, key: str, n_all: int | None = None) -> int:
    """How many of ``n_total`` images to embed: a ``select_slider`` in ``container`` (``st`` or a column).

    Offers the :data:`SAMPLE_SIZES` below ``n_total`` and ``min(n_total, 10000)``, starting at 2000
    (or the largest); with ``n_all`` (train + test, larger than ``n_total``) also that, shown as
    "all N"; with one choice only, no widget and that size.
    """
    sizes = sorted({s for s in SAMPLE_SIZES if s < n_total} | {min(n_total, SAMPLE_SIZES[-1])})
    if n_all is not None and n_all > sizes[-1]:
        sizes.append(n_all)
    if len(sizes) == 1:
        return sizes[0]
    if st.session_state.get(key) is not None and st.session_state[key] not in sizes:  # e.g. a link made on other data
        del st.session_state[key]
    fmt = (lambda s: f"all {s:,}" if s == n_all else f"{s:,}") if n_all is not None else (lambda s: f"{s:,}")
    return container.select_slider(label, sizes, value=DEFAULT_SAMPLE if DEFAULT_SAMPLE in sizes else sizes[-1], key=key, format_func=fmt)


def project_with_spinner(embeddings: np.ndarray, key: dict, method: str, dims: int, params: dict | None = None) -> np.ndarray:
    """:func:`~ssl_viz.analysis.projection.project_cached` of ``embeddings [N, D]`` to ``[N, dims]`` under a spinner.

    ``method`` is a shown name of :data:`PROJECTIONS`; ``params`` go to the projector (``n_neighbors``,
    ``min_dist``, ``perplexity``). The spinner counts the seconds of a projection that is not cached and
    warns of numba's compilation before the first UMAP in a process without a compiled cache.
    Too few points for the method (:class:`~ssl_viz.analysis.projection.ProjectionError`) end the page
    with one ``st.error`` naming how many it needs.
    """
    code = PROJECTIONS[method]
    slow = "" if code == "pca" or is_projection_cached(embeddings, key, code, dims, params) else f"Running {method} on {len(embeddings):,} points…"
    if code == "umap" and slow and not umap_is_warm():
        slow += " (the first UMAP in a server process loads numba's compiled kernels)"
    if slow and len(embeddings) > 20_000:
        slow += " Large maps take up to half a minute: exact neighbours by matrix product, then the layout."
    try:
        with st.spinner(slow or "Projecting…", show_time=bool(slow)):
            return project_cached(embeddings, key, code, dims, params)
    except ProjectionError as exc:
        st.error(f"Cannot draw a {dims}-D {method} map: {exc}")
        st.stop()


@st.cache_resource(max_entries=2, show_spinner=False)
def fitted_projector(key_json: str, method: str, dims: int, params_json: str, _embeddings: np.ndarray):
    """The fitted :class:`~ssl_viz.analysis.projection.Projector` behind a map (to place new points with its
    ``transform``), kept in memory for the two latest maps; refitted (deterministically, the same coordinates as
    the cached map) when the server has forgotten it. ``key_json`` must identify ``_embeddings`` (it is not hashed)."""
    import json

    from ssl_viz.analysis.projection import Projector

    return Projector(PROJECTIONS[method], dims, **json.loads(params_json)).fit(_embeddings)


def labelled_workspace_or_stop(needs: str, min_classes: int = 1):
    """The workspace with its model and labelled test and train sets ``(ws, model, test_ds, train_ds)``.

    A model or dataset that cannot be loaded ends the page with one ``st.error`` ("Cannot load the
    workspace: ..."); a dataset without labels ends it with "<dataset> has no labels: <needs>.", one with
    fewer than ``min_classes`` classes with "<dataset> has only one class: <needs> (at least two)."
    """
    ws = current_workspace()
    try:
        model, test_ds, train_ds = get_model(ws.model, ws.encoder), get_dataset(ws.dataset, "test", ws.label), get_dataset(ws.dataset, "train", ws.label)
    except Exception as exc:  # a bad model or dataset must not take the page down
        st.error(f"Cannot load the workspace: {exc}")
        st.stop()
    if not test_ds.has_labels:
        st.error(f"{display_title(ws.dataset)} has no labels: {needs}.")
        st.stop()
    if ws.dataset.startswith("folder:"):
        st.caption(f"Held-out figures here use the test split of {display_title(ws.dataset)} ({len(test_ds):,} of "
                   f"{len(test_ds) + len(train_ds):,} images) against its training split.")
    n = max(train_ds.num_classes, test_ds.num_classes)
    if n < min_classes:
        have = "only one class" if n == 1 else f"only {n} classes"
        st.error(f"{display_title(ws.dataset)} has {have} ({', '.join(train_ds.class_names)}): {needs} (at least {_count(min_classes)}).")
        st.stop()
    return ws, model, test_ds, train_ds


def _count(n: int) -> str:
    return {2: "two", 3: "three"}.get(n, str(n))
