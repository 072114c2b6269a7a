"""The workspace: which encoder, which dataset, which representation.

Chosen once in the shared sidebar (rendered by ``app.py`` before the page runs)
and held in ``st.session_state`` under these keys, so it holds across pages:

=====================  ===================================================
``ws_model``           model source: a run/model directory or checkpoint file
``ws_encoder``         encoder name for bare checkpoint files (else None)
``ws_dataset``         dataset registry name (or ``folder:PATH``)
``ws_label``           factor used as label (None: the dataset's default)
``ws_representation``  ``backbone``, ``projector`` or ``stage:NAME``
=====================  ===================================================

Pages call :func:`current_workspace`; when a page runs alone (AppTest) the
defaults below apply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ssl_viz.checkpoint import list_models
from ssl_viz.paths import models_dir, runs_dir

DEFAULT_MODEL_NAME = "simclr-fashion-mnist"
KEYS = ("ws_model", "ws_encoder", "ws_dataset", "ws_label", "ws_representation")


@dataclass(frozen=True)
class Workspace:
    model: str
    encoder: str | None
    dataset: str
    label: str | None
    representation: str


def available_models() -> list[tuple[str, Path, dict]]:
    return list_models(models_dir(), runs_dir())


def comparison_models(current: str, encoder_name: str) -> tuple[list[str | None], dict[str, str], int]:
    """Models to show beside the workspace model ``current``: ``(options, labels, n_supervised)``.

    ``options`` starts with None (no comparison), then supervised references (supervised runs and
    ImageNet cards; those of the same architecture ``encoder_name`` first: a fair pair), then the rest;
    ``labels`` maps each path to its display name.
    """
    others = {str(p): (label, card) for label, p, card in available_models() if str(p) != current}
    supervised = [p for p, (_, c) in others.items() if c.get("method") == "supervised" or str(c.get("source", "")).startswith("imagenet:")]
    supervised.sort(key=lambda p: others[p][1].get("encoder") != encoder_name)
    options = [None] + supervised + [p for p in others if p not in supervised]
    return options, {p: label for p, (label, _) in others.items()}, len(supervised)


def parse_indices(text: str, n: int) -> list[int] | None:
    """Image indices typed as ``"0, 1, 2"`` (commas or spaces); None unless every token is an index below ``n``."""
    tokens = text.replace(",", " ").split()
    indices = [int(t) for t in tokens if t.isdigit()]
    if not tokens or len(indices) != len(tokens) or max(indices) >= n:
        return None
    return indices


def default_model() -> str:
    env = os.environ.get("SSL_VIZ_DEFAULT_MODEL")
    if env:
        return env
    models = available_models()
    for _, path, _ in models:
        if path.name == DEFAULT_MODEL_NAME:
            return str(path)
    return str(models[0][1]) if models else ""


def fashion_mnist_available() -> bool:
    from ssl_viz.data import DatasetError
    from ssl_viz.data.fashion_mnist import find_files

    try:
        return find_files("test") is not None
    except (DatasetError, OSError):
        return False


def default_dataset() -> str:
    env = os.environ.get("SSL_VIZ_DEFAULT_DATASET")
    if env:
        return env
    return "fashion-mnist" if fashion_mnist_available() else "digits"


def current_workspace() -> Workspace:
    """The workspace chosen in the sidebar, or the defaults (behind the password form when one is set)."""
    from ssl_viz.ui.access import require_password

    require_password()  # every page reads the workspace: a page run without app.py is gated too
    state = st.session_state
    if not state.get("ws_model"):
        state["ws_model"] = default_model()
    if not state.get("ws_dataset"):
        state["ws_dataset"] = default_dataset()
    return Workspace(
        model=state["ws_model"],
        encoder=state.get("ws_encoder"),
        dataset=state["ws_dataset"],
        label=state.get("ws_label") or None,
        representation=state.get("ws_representation") or "backbone",
    )
