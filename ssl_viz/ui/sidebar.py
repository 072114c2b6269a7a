"""The shared sidebar: workspace pickers and the model card.

Rendered by ``app.py`` before the page runs, so the widgets (keyed ``ws_*``,
see :mod:`ssl_viz.ui.workspace`) keep their values across pages.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from ssl_viz.checkpoint import CheckpointError
from ssl_viz.data import DATASETS, ZIP_NAME_FILE, DatasetError, display_title
from ssl_viz.data.folder import report as folder_report
from ssl_viz.encoders import ENCODERS
from ssl_viz.fileio import atomic_write
from ssl_viz.paths import uploads_dir
from ssl_viz.safety import DATA_ROOTS_ENV, UnsafeInputError, data_roots, extract_zip, is_uploaded_dataset, max_zip_bytes, resolve_user_path
from ssl_viz.ui.loaders import get_dataset, get_model, view_split
from ssl_viz.ui.workspace import available_models, current_workspace

UPLOAD = "Upload a checkpoint…"
MAX_CHECKPOINT_MB = 200


def _save_upload(upload) -> Path:
    """Store an uploaded checkpoint under the uploads folder, named by its content hash."""
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:16]
    suffix = ".safetensors" if upload.name.endswith(".safetensors") else ".pt"
    path = uploads_dir() / "checkpoints" / f"{digest}{suffix}"
    if not path.exists():
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))  # a concurrent reader never sees half a file
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


FOLDER, ZIP = "folder", "zip"
ZIP_LABEL = "zip — upload a zip of images (a sub-folder per class, or flat)"


def _folder_choice(ws) -> str | None:
    """``folder:PATH`` for a typed path under the data roots, or None (with a message)."""
    typed = ws.dataset.removeprefix("folder:") if ws.dataset.startswith("folder:") and not is_uploaded_dataset(ws.dataset[7:]) else ""
    roots = data_roots()
    text = st.text_input("Image folder (ImageFolder layout)", value=typed, key="sb_folder_path",
                         help="A folder under the data folders of this server: " + (", ".join(map(str, roots)) or "none")
                         + f" (set {DATA_ROOTS_ENV} to change them).")
    if not text:
        st.info("Type the path of a folder of images under: " + (", ".join(map(str, roots)) or "none (upload a zip instead)"))
        return None
    try:
        return f"folder:{resolve_user_path(text, roots)}"
    except UnsafeInputError as exc:
        st.error(f"This folder cannot be used: {exc}")
        return None


def _zip_choice(ws) -> str | None:
    """``folder:PATH`` of an uploaded, safely extracted zip of images, or None (with a message)."""
    upload = st.file_uploader("Zip of images", type=["zip"], key="sb_zip",
                              help=f"At most {max_zip_bytes() >> 20} MB; unpacked into the uploads folder of this server.")
    if upload is None:
        if ws.dataset.startswith("folder:") and is_uploaded_dataset(ws.dataset[7:]):
            st.caption(f"Using the zip uploaded before ({Path(ws.dataset[7:]).name}).")
            return ws.dataset
        st.info("Upload a .zip with one sub-folder of images per class (or images only, unlabelled).")
        return None
    extracted = st.session_state.setdefault("_sb_zips", {})
    upload_id = getattr(upload, "file_id", None) or f"{upload.name}:{upload.size}"
    if upload_id not in extracted:
        try:
            extracted[upload_id] = str(extract_zip(upload, uploads_dir() / "datasets"))
        except UnsafeInputError as exc:
            st.error(f"{upload.name}: {exc}")
            return None
        _name_upload(Path(extracted[upload_id]), upload.name)
    return f"folder:{extracted[upload_id]}"


def _name_upload(folder: Path, name: str) -> None:
    """Record the zip's file name beside its unpacked images (a hidden file, never read as an image), so the
    pages name the dataset by it (:func:`ssl_viz.data.display_title`), not by the server's uploads path."""
    path = folder / ZIP_NAME_FILE
    try:
        if not path.exists() or path.read_text(encoding="utf-8").strip() != name:
            atomic_write(path, lambda tmp: Path(tmp).write_text(name, encoding="utf-8"))
    except OSError:  # a read-only uploads folder: the folder's own name is shown instead
        pass


def _dataset_picker() -> None:
    ws = current_workspace()
    names = [n for n in DATASETS if n != "folder"] + [FOLDER, ZIP]
    current = ws.dataset
    if ws.dataset.startswith("folder:"):
        current = ZIP if is_uploaded_dataset(ws.dataset[7:]) else FOLDER
    choice = st.selectbox("Dataset", names, index=names.index(current) if current in names else 0,
                          format_func=lambda n: ZIP_LABEL if n == ZIP else f"{n} — {DATASETS[n][1]}")
    if choice in (FOLDER, ZIP):
        choice = _folder_choice(ws) if choice == FOLDER else _zip_choice(ws)
        if choice is None:
            return
    if choice != ws.dataset:
        st.session_state["ws_label"] = None
    st.session_state["ws_dataset"] = choice
    try:
        ds = get_dataset(choice, view_split(choice))
    except DatasetError as exc:
        st.error(str(exc))
        return
    if choice.startswith("folder:"):
        report = folder_report(choice[7:], "all")
        st.caption(f"**{display_title(choice)}**: {len(ds):,} images, all shown on the pages; held-out figures "
                   "(kNN accuracy, linear probe) use its 20 % test split."
                   + (f" Image store: {report.disk_bytes / 2**20:,.0f} MB on disk." if report is not None else ""))
        if report is not None and report.skipped:
            with st.expander(f"{len(report.skipped)} files skipped"):
                st.table({"file": [f for f, _ in report.skipped[:50]], "why": [w for _, w in report.skipped[:50]]})
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
