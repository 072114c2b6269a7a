"""The shared sidebar: workspace pickers and the model card.

Rendered by ``app.py`` before the page runs, so the widgets (keyed ``ws_*``,
see :mod:`ssl_viz.ui.workspace`) keep their values across pages.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from ssl_viz.checkpoint import CheckpointError
from ssl_viz.data import DATASETS, DatasetError
from ssl_viz.encoders import ENCODERS
from ssl_viz.paths import uploads_dir
from ssl_viz.ui.loaders import get_dataset, get_model
from ssl_viz.ui.workspace import available_models, current_workspace

UPLOAD = "Upload a checkpoint…"
MAX_CHECKPOINT_MB = 200


def _save_upload(upload) -> Path:
    """Store an uploaded checkpoint under the uploads folder, named by its content hash."""
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:16]
    suffix = ".safetensors" if upload.name.endswith(".safetensors") else ".pt"
    path = uploads_dir() / "checkpoints" / f"{digest}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return path


def _model_picker() -> None:
    models = available_models()
    labels = {str(p): f"{label} · {card.get('method', '?')}/{card.get('encoder', '?')}" for label, p, card in models}
    ws = current_workspace()
    options = list(labels) + [UPLOAD]
    if ws.model not in options:
        options.insert(0, ws.model)
        labels[ws.model] = Path(ws.model).name
    choice = st.selectbox("Encoder", options, index=options.index(ws.model), format_func=lambda o: labels.get(o, o),
                          help="A shipped model, one of your runs, or a checkpoint you upload.")
    if choice != UPLOAD:
        st.session_state["ws_model"] = choice
        if not Path(choice).is_file():
            st.session_state["ws_encoder"] = None
        return
    upload = st.file_uploader("Checkpoint (.safetensors, .pt, .pth, .tar)", type=["safetensors", "pt", "pth", "tar"])
    encoder = st.selectbox("Its architecture", list(ENCODERS), index=list(ENCODERS).index("resnet18"))
    if upload is not None:
        if upload.size > MAX_CHECKPOINT_MB * 2**20:
            st.error(f"{upload.name} is larger than {MAX_CHECKPOINT_MB} MB.")
            return
        path = _save_upload(upload)
        st.session_state["ws_model"], st.session_state["ws_encoder"] = str(path), encoder


def _dataset_picker() -> None:
    ws = current_workspace()
    names = [n for n in DATASETS if n != "folder"] + ["folder"]
    current = "folder" if ws.dataset.startswith("folder:") else ws.dataset
    choice = st.selectbox("Dataset", names, index=names.index(current) if current in names else 0,
                          format_func=lambda n: f"{n} — {DATASETS[n][1]}")
    if choice == "folder":
        path = st.text_input("Image folder (ImageFolder layout)", value=ws.dataset.removeprefix("folder:") if ws.dataset.startswith("folder:") else "")
        if not path:
            st.info("Type the path of a folder of images.")
            return
        choice = f"folder:{path}"
    if choice != ws.dataset:
        st.session_state["ws_label"] = None
    st.session_state["ws_dataset"] = choice
    try:
        ds = get_dataset(choice, "test")
    except DatasetError as exc:
        st.error(str(exc))
        return
    if ds.factors:
        factors = list(ds.factors)
        default = st.session_state.get("ws_label") or ds.label_factor or factors[0]
        st.session_state["ws_label"] = st.selectbox("Label by factor", factors, index=factors.index(default) if default in factors else 0)


def _representation_picker() -> None:
    ws = current_workspace()
    try:
        model = get_model(ws.model, ws.encoder)
    except (CheckpointError, OSError, ValueError) as exc:
        st.error(f"Cannot load this model: {exc}")
        return
    reps = model.representations()
    current = ws.representation if ws.representation in reps else "backbone"
    st.session_state["ws_representation"] = st.selectbox(
        "Embedding", reps, index=reps.index(current),
        help="backbone: pooled output of the last stage (what is evaluated); projector: the head's output the loss sees; "
        "stage:NAME: pooled output of an earlier stage.")
    with st.expander("Model card"):
        card = model.card
        st.markdown(f"**{model.name}** — {card.get('method', '?')} · {card.get('encoder', '?')} · trained on {card.get('dataset', '?')}")
        metrics = card.get("metrics") or {}
        if metrics:
            st.table({k: [round(v, 4) if isinstance(v, float) else v] for k, v in metrics.items()})
        if card.get("command"):
            st.code(card["command"], language="bash")
        if model.report.missing or model.report.unexpected:
            st.caption(model.report.summary())


def render_sidebar() -> None:
    """Draw the workspace pickers into the sidebar."""
    with st.sidebar:
        st.subheader("Workspace")
        _model_picker()
        _dataset_picker()
        _representation_picker()
