"""Streamlit parts of the Diagnose augmentations page: the cached diagnosis, its numbers and table, the ablation sweep panel."""

from __future__ import annotations

import streamlit as st

from ssl_viz.analysis.diagnosis import VERDICT_COLORS, Diagnosis, diagnose
from ssl_viz.sweeps import ablation_results, launch_ablation, load_sweep, new_manifest, sweep_config
from ssl_viz.ui.loaders import get_dataset, get_model

TABLE_COLUMNS = ["name", "verdict", "label_damage", "probe_transformed", "probe_adapted", "image_change", "invariance", "sim_aug",
                 "ablation_delta"]


@st.cache_data(max_entries=8, show_spinner=False)
def cached_diagnosis(model: str, encoder: str | None, dataset: str, label: str | None, n: int, strength: float, names: tuple,
                     use_encoder: bool, representation: str) -> Diagnosis:
    """:func:`~ssl_viz.analysis.diagnosis.diagnose` on ``n`` training and ``max(150, n // 2)`` test images, with a progress bar;
    the workspace encoder is measured when ``use_encoder``."""
    train = get_dataset(dataset, "train", label).head(n)
    test = get_dataset(dataset, "test", label).head(max(150, n // 2))
    bar = st.progress(0.0, text="Diagnosing…")
    loaded = get_model(model, encoder) if use_encoder else None
    diag = diagnose(train, test, loaded.embed_fn(representation) if loaded else None, list(names), strength,
                    encoder_name=loaded.name if loaded else None, progress=lambda f, t: bar.progress(min(1.0, f), text=t))
    bar.empty()
    return diag


@st.cache_data(max_entries=4, show_spinner="Evaluating the sweep's runs…")
def sweep_accuracies(manifest: str, dataset: str, label: str | None, n: int) -> dict:
    """kNN accuracy of each finished run of the sweep in ``manifest`` (None for the others)."""
    return ablation_results(load_sweep(manifest)[1], get_dataset(dataset, "train", label).head(n), get_dataset(dataset, "test", label))


def diagnosis_metrics(diag: Diagnosis) -> None:
    """One row of metrics: the probe on clean test images, chance, the encoder's kNN and linear accuracy."""
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Probe, clean test", f"{diag.probe_clean:.3f}", help=f"Ridge probe on: {', '.join(diag.probe_groups)}")
    m2.metric("Chance", f"{diag.chance:.3f}")
    m3.metric("Encoder kNN top-1", "—" if diag.knn_top1 is None else f"{diag.knn_top1:.3f}")
    m4.metric("Encoder linear top-1", "—" if diag.linear_top1 is None else f"{diag.linear_top1:.3f}")


def diagnosis_table(diag: Diagnosis) -> None:
    """The per-augmentation table, verdicts tinted by colour, numbers to three decimals."""
    table = diag.table()[TABLE_COLUMNS].style.map(lambda v: f"background-color: {VERDICT_COLORS[v]}40", subset=["verdict"])
    st.dataframe(table, hide_index=True, key="diag_table",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in TABLE_COLUMNS[2:]})


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
