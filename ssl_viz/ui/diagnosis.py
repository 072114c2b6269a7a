"""Streamlit parts of the Diagnose augmentations page: the cached dose-response, its summary table, the recommended
policy (and the button that takes it to the Train page), the verification runs, the before / after strips, the
single-strength numbers and the ablation sweep panel.

Widget keys: ``diag_*``. Session keys: ``diag_verify`` (the manifest of the verification runs queued from the page,
:func:`ssl_viz.sweeps.launch_verification`), ``diag_sweep`` (the ablation sweep's manifest). Every number and figure
comes from :mod:`ssl_viz.analysis.diagnosis` and :mod:`ssl_viz.sweeps`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from ssl_viz.analysis.diagnosis import (
    SMALL_IMAGE_CROP_FLOOR,
    SMALL_IMAGE_SIZE,
    VERDICT_COLORS,
    Diagnosis,
    DoseCurve,
    DoseResponse,
    dose_figure,
    dose_response,
    dose_setting,
    example_strip,
)
from ssl_viz.analysis.images import make_grid
from ssl_viz.augment import describe_policy, parse_policy
from ssl_viz.data import display_title
from ssl_viz.data.folder import display_name
from ssl_viz.fileio import read_json
from ssl_viz.jobs import JobError, dispatch_queue, run_status
from ssl_viz.safety import is_uploaded_dataset
from ssl_viz.sweeps import ablation_results, launch_ablation, launch_verification, load_sweep, new_manifest, sweep_config, verification_results
from ssl_viz.ui.loaders import get_dataset, get_model
from ssl_viz.ui.run_panel import ACTIVE, open_train_page

TABLE_COLUMNS = ["name", "verdict", "label_damage", "probe_transformed", "probe_adapted", "image_change", "invariance", "sim_aug",
                 "ablation_delta"]
# the verdict of a whole curve -> its colour
CURVE_COLORS = {"safe": VERDICT_COLORS["suitable"], "safe up to": "#e6a117", "unsafe": VERDICT_COLORS["harmful"],
                "no effect": VERDICT_COLORS["neutral"]}
MARKDOWN_COLORS = {"harmful": "red", "neutral": "gray", "suitable": "green"}


def dataset_title(dataset: str, label: str | None = None) -> str:
    """The dataset as the user knows it, never a cache path: the registry name (``"fashion-mnist"``), ``"folder cats"``
    for a typed ``folder:/data/cats``, the zip's name (``"zip pets.zip"``) for an unpacked upload; with ``label``:
    ``"shapes by color"``."""
    name = dataset
    if dataset.startswith("folder:"):
        path = dataset.removeprefix("folder:")
        title = display_name(display_title(dataset))
        if not is_uploaded_dataset(path):
            name = f"folder {title}"
        else:  # the zip's name, recorded when it was unpacked; an older upload has none
            name = "your uploaded images" if title == display_name(Path(path).name) else f"zip {title}"
    return f"{name} by {label}" if label else name


# ---------------------------------------------------------------------------- the diagnosis


@st.cache_data(max_entries=8, show_spinner=False)
def cached_dose_response(model: str, encoder: str | None, dataset: str, label: str | None, n: int, names: tuple,
                         use_encoder: bool, representation: str) -> DoseResponse:
    """:func:`~ssl_viz.analysis.diagnosis.dose_response` on ``n`` training and ``max(150, n // 2)`` test images, with a
    progress bar naming each stage; the workspace encoder is measured when ``use_encoder``."""
    train = get_dataset(dataset, "train", label).head(n)
    test = get_dataset(dataset, "test", label).head(max(150, n // 2))
    bar = st.progress(0.0, text="Loading the encoder…")
    loaded = get_model(model, encoder) if use_encoder else None
    resp = dose_response(train, test, loaded.embed_fn(representation) if loaded else None, list(names),
                         encoder_name=loaded.name if loaded else None, progress=lambda f, t: bar.progress(min(1.0, max(0.0, f)), text=t))
    bar.empty()
    return resp


def dose_response_or_stop(ws, label: str | None, n: int, names: list[str], use_encoder: bool) -> DoseResponse:
    """The cached dose-response of the workspace dataset by ``label``; a dataset without labels, too few images or any
    other failure ends the page with one ``st.error`` (never a traceback)."""
    title = dataset_title(ws.dataset, label)
    try:
        if not get_dataset(ws.dataset, "train", label).has_labels:
            st.error(f"{title} has no labels. A diagnosis asks whether each augmentation keeps the label, so it needs "
                     "labelled images (a folder with one sub-folder per class, or a dataset with classes).")
            st.stop()
        return cached_dose_response(ws.model, ws.encoder, ws.dataset, label, n, tuple(names), use_encoder, ws.representation)
    except ValueError as exc:
        st.error(f"Cannot diagnose {title}: {exc}")
    except Exception as exc:  # a model or dataset that cannot be read must not take the page down
        st.error(f"Cannot diagnose {title}: {type(exc).__name__}: {exc}")
    st.stop()


def dose_chart(resp: DoseResponse, title: str) -> None:
    """The dose-response curves (:func:`~ssl_viz.analysis.diagnosis.dose_figure`) on one chart, titled with ``title``."""
    fig = dose_figure(resp)
    fig.update_layout(title=f"{title}: label damage against strength")
    st.plotly_chart(fig, key="diag_chart")


def curve_verdict(curve: DoseCurve, min_change: float) -> str:
    """One word for a whole curve: ``safe`` (at every strength), ``safe up to`` (the gentler ones only), ``unsafe``
    (not even the gentlest) or ``no effect`` (the images hardly change even at strength 1)."""
    if max(curve.image_change) < min_change:
        return "no effect"
    if curve.safe_up_to is None:
        return "unsafe"
    return "safe" if curve.safe_up_to >= max(curve.strengths) else "safe up to"


def dose_table(resp: DoseResponse) -> None:
    """One row per augmentation: its verdict over all strengths (coloured) and the library's one-sentence summary
    ("safe up to X, harmful from Y"), as a static table whose sentences wrap."""
    min_change = float(resp.thresholds.get("min_change", 0.03))
    verdicts = [curve_verdict(c, min_change) for c in resp.curves]
    table = pd.DataFrame({
        "augmentation": [c.name for c in resp.curves],
        "verdict": [v if v != "safe up to" else f"safe up to {c.safe_up_to:g}" for v, c in zip(verdicts, resp.curves)],
        "summary": [c.summary.split(": ", 1)[-1] for c in resp.curves],
    })
    colors = [f"background-color: {CURVE_COLORS[v]}55; white-space: nowrap" for v in verdicts]
    st.table(table.style.apply(lambda _: colors, subset=["verdict"]), hide_index=True, border="horizontal")


# ---------------------------------------------------------------------------- the recommended policy


def recommended_policy_panel(spec: str, dataset: str, label: str | None, image_size: int | None = None) -> None:
    """The recommended policy as an ``--augment`` spec, in words, and the "Train with this policy" button
    (``diag_train``) that opens the Train page with every knob set to it (:func:`~ssl_viz.ui.run_panel.open_train_page`).
    ``image_size`` (the images' smaller side, pixels) adds the small-image crop floor's sentence where it applies."""
    st.code(spec, language="text", wrap_lines=True)
    floor = ""
    if image_size is not None and image_size <= SMALL_IMAGE_SIZE:
        floor = (f" On images of {SMALL_IMAGE_SIZE} px or less, where some crop is harmful, a crop keeps at least "
                 f"{SMALL_IMAGE_CROP_FLOOR:.0%} of the area even where harder crops look safe: measured in 120 s runs, "
                 "harder crops slow learning on such small images.")
    st.caption(f"In words: **{describe_policy(parse_policy(spec))}**. Each augmentation at the strongest setting that stays "
               "safe for the label, so the two views share as little as possible beyond what the label needs "
               f"(Tian et al. 2020, *What Makes for Good Views for Contrastive Learning?*).{floor}")
    if st.button("Train with this policy", key="diag_train", icon=":material/model_training:",
                 help="Opens the Train page with its augmentation knobs set to this policy, on this dataset and label."):
        open_train_page(spec, dataset, label)


# ---------------------------------------------------------------------------- proof by training


def verification_panel(dataset: str, label: str | None, spec: str) -> None:
    """Queue the three verification runs (recommended, ``simclr``, ``simclr-small``) in the background (button
    ``diag_verify_go``, manifest kept in ``st.session_state["diag_verify"]``) and show their progress, then their table."""
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    budget = c1.number_input("Seconds per run", 5, 3600, 120, 5, key="diag_verify_budget")
    total = f"{3 * budget / 60:.0f} min" if budget >= 40 else f"{3 * budget} s"
    c2.caption(f"Three short SimCLR runs (small CNN, width 16) on {dataset_title(dataset, label)}: with the recommended "
               f"policy, with SimCLR's `simclr` and with `simclr-small`, {budget} s each, queued with the Runs page's runs "
               f"(about {total} of training in all). Each run's kNN top-1 for the label is measured once it is done.")
    if st.button("Train the three policies", key="diag_verify_go", icon=":material/science:"):
        try:
            st.session_state["diag_verify"] = str(launch_verification(sweep_config(dataset, label, spec), spec, float(budget)))
        except (JobError, ValueError, OSError) as exc:
            st.error(f"Cannot launch the verification: {exc}")
    manifest = st.session_state.get("diag_verify")
    if manifest and Path(manifest).exists():
        verification_progress(manifest)


def verification_progress(manifest: str) -> None:
    """The verification runs of ``manifest``: a progress bar polled every 3 s while a run is queued or training
    (advancing the run queue), a Refresh button, and once every run is done the table of kNN top-1 per policy."""
    record = read_json(manifest, {}) or {}
    runs = {name: Path(d) for name, d in record.get("runs", {}).items()}
    was_active = any(run_status(d).state in ACTIVE for d in runs.values())

    @st.fragment(run_every=3 if was_active else None)
    def progress() -> None:
        for root in {d.parent for d in runs.values()}:
            dispatch_queue(root)
        statuses = {name: run_status(d) for name, d in runs.items()}
        done = sum(s.state == "done" for s in statuses.values())
        st.progress(sum(1.0 if s.state == "done" else min(1.0, s.progress) for s in statuses.values()) / max(1, len(runs)),
                    text=f"Verification on {dataset_title(record.get('dataset', '?'), record.get('label'))}, "
                         f"{record.get('budget', 0):g} s per run: {done}/{len(runs)} done · "
                         + " · ".join(f"{name}: {s.state}" for name, s in statuses.items()))
        failed = [f"{name} {s.state}" for name, s in statuses.items() if not s.active and s.state != "done"]
        if failed:
            st.error(f"Not every run finished ({', '.join(failed)}); see the Runs page for its log.")
        if done == len(runs):
            verification_table(manifest, record)
        else:
            st.button("Refresh", key="diag_verify_refresh")
        if any(s.active for s in statuses.values()) != was_active:
            st.rerun()

    progress()


def verification_table(manifest: str, record: dict) -> None:
    """kNN top-1 of each verification run side by side (table ``diag_verify_table``), best in bold, and the gap
    between the recommended policy and the better default."""
    with st.spinner("Measuring each run's kNN top-1 (whole test set against the whole training set)…"):
        _, knn = verification_results(manifest)
    policies = record.get("policies", {})
    table = pd.DataFrame({"policy": list(knn), "augment": [policies.get(n, "") for n in knn],
                          "kNN top-1": [np.nan if v is None else v for v in knn.values()]})
    best = table["kNN top-1"].max()
    st.dataframe(table.style.apply(lambda col: ["font-weight: bold" if v == best else "" for v in col], subset=["kNN top-1"]),
                 hide_index=True, key="diag_verify_table", width="stretch",
                 column_config={"kNN top-1": st.column_config.NumberColumn(format="%.3f"), "augment": st.column_config.TextColumn(width="large")})
    defaults = [v for n, v in knn.items() if n != "recommended" and v is not None]
    if knn.get("recommended") is not None and defaults:
        gap = 100 * (knn["recommended"] - max(defaults))
        st.markdown(f"The recommended policy is **{gap:+.1f} points** against the better default "
                    f"({record.get('budget', 0):g} s SimCLR runs, kNN with k = 200, T = 0.1).")


# ---------------------------------------------------------------------------- see it


@st.cache_data(max_entries=64, show_spinner=False)
def cached_strip(dataset: str, label: str | None, name: str, strength: float, per_class: int = 2) -> tuple[np.ndarray, list[str]]:
    """A grid of test images of ``dataset`` by ``label``: one column per class, rows before / after augmentation ``name``
    at ``strength`` (:func:`~ssl_viz.analysis.diagnosis.example_strip`), ``per_class`` pairs of rows; and the classes."""
    before, after, captions = example_strip(get_dataset(dataset, "test", label), name, strength, per_class=per_class)
    rows = [img for k in range(per_class) for img in (*before[k::per_class], *after[k::per_class])]
    return make_grid(rows, ncols=len(before) // per_class, pad=2), captions[::per_class]


def example_strips(dataset: str, label: str | None, diag: Diagnosis) -> None:
    """For each augmentation of ``diag``, its setting and verdict at ``diag.strength`` over a grid of images before
    and after it, two columns of strips."""
    cols = st.columns(2)
    for i, a in enumerate(diag.augmentations):
        grid, classes = cached_strip(dataset, label, a.name, diag.strength)
        col = cols[i % 2]
        col.markdown(f"**{a.name}** · {dose_setting(a.name, diag.strength)} · "
                     f":{MARKDOWN_COLORS.get(a.verdict, 'gray')}[{a.verdict}] (label damage {a.label_damage:.2f})")
        col.image(grid, caption="rows: before, after, before, after · columns: " + ", ".join(classes), width="content")


def diagnosis_metrics(diag: Diagnosis) -> None:
    """One row of metrics: the probe on clean test images, chance, the encoder's kNN and linear accuracy."""
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Probe, clean test", f"{diag.probe_clean:.3f}", help=f"Ridge probe on: {', '.join(diag.probe_groups)}")
    m2.metric("Chance", f"{diag.chance:.3f}")
    m3.metric("Encoder kNN top-1", "—" if diag.knn_top1 is None else f"{diag.knn_top1:.3f}")
    m4.metric("Encoder linear top-1", "—" if diag.linear_top1 is None else f"{diag.linear_top1:.3f}")


def diagnosis_table(diag: Diagnosis) -> None:
    """The per-augmentation table at one strength, verdicts tinted by colour, numbers to three decimals."""
    table = diag.table()[TABLE_COLUMNS].style.map(lambda v: f"background-color: {VERDICT_COLORS[v]}40", subset=["verdict"])
    st.dataframe(table, hide_index=True, key="diag_table",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in TABLE_COLUMNS[2:]})


# ---------------------------------------------------------------------------- ablation sweep


@st.cache_data(max_entries=4, show_spinner="Evaluating the sweep's runs…")
def sweep_accuracies(manifest: str, dataset: str, label: str | None, n: int) -> dict:
    """kNN accuracy of each finished run of the sweep in ``manifest`` (None for the others)."""
    return ablation_results(load_sweep(manifest)[1], get_dataset(dataset, "train", label).head(n), get_dataset(dataset, "test", label))


def ablation_panel(dataset: str, label: str | None, names: list[str], sweep: str | None, states: dict[str, str]) -> None:
    """The expander that queues a sweep (remembered in ``st.session_state["diag_sweep"]``) and shows its runs' progress."""
    with st.expander("Ablation sweep: short training runs with each augmentation added or removed"):
        a1, a2, a3 = st.columns(3)
        mode = a1.radio("Mode", ["add", "remove"], horizontal=True, key="diag_abl_mode")
        budget = a2.number_input("Seconds per run", 10, 3600, 60, 10, key="diag_abl_budget")
        base = a3.text_input("Base policy", "crop+flip" if mode == "add" else "simclr", key="diag_abl_base")
        st.caption(f"{len(names) + 1} SimCLR runs (small-cnn) in the background, queued with the Runs page's runs: "
                   f"about {(len(names) + 1) * budget / 60:.0f} min of training. The table's ablation_delta is the kNN accuracy "
                   "the augmentation adds (mode add) or that removing it costs (mode remove).")
        if st.button("Launch sweep", key="diag_abl_go"):
            try:
                manifest = new_manifest()
                launch_ablation(sweep_config(dataset, label, base), names, mode, float(budget), manifest=manifest)
                st.session_state["diag_sweep"] = str(manifest)
                st.rerun()
            except Exception as exc:
                st.error(f"Cannot launch the sweep: {exc}")
        if sweep:
            done = sum(s == "done" for s in states.values())
            st.progress(done / len(states), text=f"Sweep: {done}/{len(states)} runs done · " + ", ".join(f"{k}: {s}" for k, s in states.items()))
            st.button("Refresh", key="diag_abl_refresh")
