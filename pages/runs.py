"""Runs & compare: every training run with its scores; overlaid curves, the alignment-uniformity plane, embedding evolution."""

from pathlib import Path

import streamlit as st

from ssl_viz.analysis.runs import (
    CURVE_METRICS,
    EVOLUTION,
    curve_frame,
    curves_figure,
    evolution_figure,
    evolution_frames,
    load_evolution,
    plane_figure,
    plane_points,
    run_table,
)
from ssl_viz.jobs import list_runs
from ssl_viz.ui.workspace import current_workspace

st.title("Runs & compare")
st.markdown("Every run under the runs folder, training or finished. Comparing runs that differ in one setting (augmentations, "
            "temperature, batch size) shows what that setting does: Wang & Isola (2020) split the contrastive loss into "
            "**alignment** (views of one image close) and **uniformity** (embeddings spread over the sphere); good encoders sit "
            "low on both, and each run draws a path in that plane as it trains.")

ws = current_workspace()
runs = list_runs()
if not runs:
    st.info("No runs yet: start one on the **Train** page, or `python -m ssl_viz train ... --out runs/NAME`.")
    st.stop()
table = run_table(runs)
paths = dict(zip(table["run"], table["path"]))
SHOWN = ["run", "method", "encoder", "dataset", "status", "steps", "kNN", "linear", "alignment", "uniformity", "wall time (s)", "device"]
FMT = {c: st.column_config.NumberColumn(format="%.3f") for c in ("kNN", "linear", "alignment", "uniformity")}


@st.fragment(run_every=3 if any(r.active for r in runs) else None)
def status_table() -> None:
    current = run_table(list_runs())
    st.dataframe(current[SHOWN], hide_index=True, width="stretch", column_config=FMT)
    if any(current["status"].isin(["queued", "starting", "running"])) != any(r.active for r in runs):
        st.rerun()


status_table()
ready = list(table.loc[table["checkpoint"], "run"])
if ready:
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    current = Path(ws.model).name
    pick = c1.selectbox("Run with a checkpoint", ready, index=ready.index(current) if current in ready else 0, key="runs_use")
    if c2.button("Use as workspace encoder", key="runs_use_btn", help="every view then looks at this run's encoder"):
        st.session_state["ws_model"], st.session_state["ws_encoder"] = paths[pick], None
        st.rerun()

st.subheader("Compare")
chosen = st.multiselect("Runs to compare", list(table["run"]), default=list(table["run"])[:3], key="runs_compare")
if not chosen:
    st.info("Pick one or more runs.")
    st.stop()
frames = {name: curve_frame(paths[name]) for name in chosen}
c1, c2, c3 = st.columns(3)
metric = c1.selectbox("Metric", CURVE_METRICS, key="runs_metric")
x = c2.radio("x axis", ["step", "time"], horizontal=True, key="runs_x", format_func=lambda v: "training seconds" if v == "time" else v)
log_y = c3.toggle("log y", key="runs_log")
st.plotly_chart(curves_figure(frames, metric, x, log_y), width="stretch", key="runs_curves")
st.dataframe(table[table["run"].isin(chosen)][[*SHOWN[:5], "kNN", "linear", "alignment", "uniformity", "augment", "batch", "τ", "seed"]],
             hide_index=True, width="stretch", column_config=FMT)

st.markdown("**Alignment-uniformity plane** (Wang & Isola 2020, fig. 2): one point per kNN-monitor evaluation, the large point is the "
            "latest; colour is kNN accuracy. A random encoder is 'aligned' only because it maps everything close together; training "
            "spreads the embeddings (moves left) while keeping views of one image close (low).")
points = plane_points([paths[n] for n in chosen])
if len(points):
    st.plotly_chart(plane_figure(points), width="stretch", key="runs_plane")
else:
    st.info("No alignment/uniformity records yet: they come from the kNN monitor (labelled datasets, kNN every > 0).")

st.subheader("Embedding evolution")
st.markdown("Snapshots of a fixed sample of test embeddings, taken at each kNN-monitor step, put in one frame of reference by "
            "orthogonal Procrustes so only real changes move the points: from a random encoder's blob, classes pull apart.")
with_evo = [n for n in chosen if (Path(paths[n]) / EVOLUTION).exists()]
if not with_evo:
    st.info("None of the chosen runs has snapshots yet (evolution.npz is written at each kNN-monitor step).")
    st.stop()
c1, c2 = st.columns(2)
name = c1.selectbox("Run", with_evo, key="runs_evo_run")
proj = c2.radio("Projection", ["PCA", "UMAP"], horizontal=True, key="runs_evo_proj",
                help="PCA: rotate every snapshot onto the last, project on its two main axes (fast). UMAP: one map per snapshot, aligned.")
evo = load_evolution(paths[name])
if evo is None or len(evo.steps) == 0:
    st.error(f"{name}: evolution.npz cannot be read.")
    st.stop()
key = {"run": paths[name], "snapshots": [int(s) for s in evo.steps]}
try:
    with st.spinner(f"Projecting {len(evo.steps)} snapshots with {proj}…"):
        coords, steps = evolution_frames(evo, proj.lower(), max_frames=30 if proj == "PCA" else 12, cache_key=key)
except Exception as exc:  # a projection failure must not take the page down
    st.error(f"Cannot project the snapshots: {exc}")
    st.stop()
st.plotly_chart(evolution_figure(coords, evo.labels, steps, evo.class_names, title=f"{name}: {len(steps)} snapshots"),
                width="stretch", key="runs_evo")
