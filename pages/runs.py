"""Runs & compare: every training run with its scores; overlaid curves, the alignment-uniformity plane, embedding evolution."""

import streamlit as st

from ssl_viz.analysis.runs import COMPARE_COLUMNS, CURVE_METRICS, curve_frame, curves_figure, plane_figure, plane_points, run_table
from ssl_viz.jobs import list_runs
from ssl_viz.ui.run_panel import evolution_view, runs_status_table, score_format, use_as_workspace_encoder
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
runs_status_table(runs)
use_as_workspace_encoder(table, ws.model)

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
st.dataframe(table[table["run"].isin(chosen)][COMPARE_COLUMNS], hide_index=True, width="stretch", column_config=score_format())

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
evolution_view(chosen, paths)
