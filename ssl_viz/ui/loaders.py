"""Cached loaders shared by every page.

Models and datasets are ``st.cache_resource`` (one copy shared by all browser
sessions, never mutated); derived arrays go through the on-disk cache of
:mod:`ssl_viz.cache` plus a bounded ``st.cache_data``. Arguments are ids and
paths (hashable), never tensors.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from ssl_viz.cache import cached_arrays, fingerprint
from ssl_viz.checkpoint import LoadedModel, load_model
from ssl_viz.data import ImageDataset, load_dataset
from ssl_viz.evaluate import check_embeddings, embed_dataset


@st.cache_resource(max_entries=6, show_spinner="Loading model…")
def get_model(source: str, encoder: str | None = None) -> LoadedModel:
    """A model in eval mode with gradients off, shared read-only by all sessions."""
    model = load_model(source, encoder)
    for module in (model.encoder, model.projector, model.classifier):
        if module is not None:
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
    return model


def view_split(dataset: str) -> str:
    """The split the pages show: every image (``"all"``) of your own folder or zip, where the train/test split is
    only an evaluation device (kept for held-out figures such as kNN accuracy); the test split of a built-in set."""
    return "all" if dataset.startswith("folder:") else "test"


@st.cache_resource(max_entries=8, show_spinner="Loading dataset…")
def get_dataset(name: str, split: str = "test", label: str | None = None) -> ImageDataset:
    """``load_dataset(name, split)`` shared by all sessions; a folder's first load draws a progress bar while its
    image store is built (:mod:`ssl_viz.data.store`)."""
    if not name.startswith("folder:"):
        return load_dataset(name, split=split, label=label or None)
    bar = st.empty()
    try:
        return load_dataset(name, split=split, label=label or None,
                            progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=f"Image store: {text}"))
    finally:
        bar.empty()


def sample_indices(n_total: int, n: int, seed: int = 0) -> np.ndarray:
    """A fixed, sorted random sample of ``min(n, n_total)`` indices."""
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


@st.cache_data(max_entries=16, show_spinner=False)
def get_embeddings(source: str, dataset: str, split: str, representation: str, n: int, encoder: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings ``[n, D]`` of a fixed sample of ``dataset[split]`` and the sample's indices ``[n]``.

    Cached on disk by (checkpoint fingerprint, dataset, split, representation, n):
    a second view, even after a restart, is instant. Shows a progress bar the first time.
    Raises :class:`~ssl_viz.evaluate.EmbeddingError` (nothing cached) for NaN / overflowing embeddings.
    """
    ds = get_dataset(dataset, split)
    idx = sample_indices(len(ds), n)
    key = {"model": fingerprint(source), "encoder": encoder, "dataset": dataset, "split": split, "rep": representation, "n": len(idx)}

    def compute() -> dict[str, np.ndarray]:
        model = get_model(source, encoder)
        bar = st.progress(0.0, text=f"Embedding {len(idx)} images with {model.name}…")
        fn = model.embed_fn(representation)
        try:
            with torch.inference_mode():
                emb = embed_dataset(fn, ds.images[torch.as_tensor(idx)], batch_size=256, progress=lambda f: bar.progress(f, text=f"Embedding… {f:.0%}"))
        finally:
            bar.empty()
        check_embeddings(emb, f"{model.name}'s {representation} embeddings")  # NaN / overflow: one error, nothing cached
        return {"embeddings": emb.numpy().astype(np.float32), "indices": idx}

    arrays = cached_arrays("embeddings", key, compute)
    check_embeddings(arrays["embeddings"], f"the cached {representation} embeddings of {source}")  # an entry from an older version
    return arrays["embeddings"], arrays["indices"]


@st.cache_data(max_entries=8, show_spinner=False)
def channel_scores(source: str, encoder_name: str | None, dataset: str, layer: str, n: int, version: str) -> tuple[torch.Tensor, np.ndarray]:
    """Mean activation of every channel of ``layer`` for a fixed sample of ``n`` images of the pages' split
    (:func:`view_split`): (``[n, C]``, indices ``[n]``).

    ``version`` (the checkpoint's fingerprint) makes a retrained checkpoint at the same path a new entry.
    """
    from ssl_viz.analysis.feature_maps import layer_scores

    model, ds = get_model(source, encoder_name), get_dataset(dataset, view_split(dataset))
    idx = sample_indices(len(ds), n)
    bar = st.progress(0.0, text=f"Running {len(idx)} images through {layer}…")
    scores = layer_scores(model.encoder, ds.images[idx], layer, progress=lambda f: bar.progress(f))
    bar.empty()
    return scores, idx


def dataset_or_stop(ws, split: str | None = None) -> ImageDataset:
    """The workspace dataset's ``split`` (default :func:`view_split`: all of a folder, the test split of a built-in
    set); one clear ``st.error`` (never a traceback) ends the page if it cannot load."""
    try:
        return get_dataset(ws.dataset, split or view_split(ws.dataset), ws.label)
    except Exception as exc:  # a bad dataset must not take the page down
        st.error(f"Cannot load dataset {ws.dataset}: {exc}")
        st.stop()


def workspace_or_stop():
    """The current workspace with its model and the images pages show ``(ws, model, dataset)`` (:func:`view_split`).

    A model or dataset that cannot be loaded ends the page with one clear ``st.error``
    (never a traceback), so every page gets the same guard.
    """
    from ssl_viz.ui.workspace import current_workspace

    ws = current_workspace()
    try:
        model = get_model(ws.model, ws.encoder)
    except Exception as exc:  # a bad model must not take the page down
        st.error(f"Cannot load the workspace: {exc}")
        st.stop()
    return ws, model, dataset_or_stop(ws)
