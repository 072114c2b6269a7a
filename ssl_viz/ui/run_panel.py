"""Streamlit pieces of the Train and Runs pages: augmentation knobs, the run picker, the live panel of one run
with its controls, the status table of every run, "use as workspace encoder", and the embedding-evolution view.

Widget keys: ``tr_*`` (Train page), ``runs_*`` (Runs page); choosing a run as the workspace encoder sets
``ws_model`` / ``ws_encoder`` (:mod:`ssl_viz.ui.workspace`). Another page hands the Train page a policy with
:func:`open_train_page` (session key ``tr_policy_spec``: the spec, offered as the preset ``"recommended"``).
Data and figures come from :mod:`ssl_viz.analysis.runs`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ssl_viz.analysis.runs import (
    SCORE_COLUMNS,
    TABLE_COLUMNS,
    curve_frame,
    evolution_figure,
    evolution_frames,
    has_evolution,
    live_figure,
    live_tiles,
    load_evolution,
    run_table,
)
from ssl_viz.augment import AUGMENT_KNOBS, POLICIES, describe_policy, knobs_from_policy, parse_policy, policy_from_knobs
from ssl_viz.data import DATASETS
from ssl_viz.jobs import JobError, cancel_run, delete_run, dispatch_queue, list_runs, log_tail, resume_run, run_status

ACTIVE = ("queued", "starting", "running")


def score_format() -> dict:
    """Column formats of the run tables: scores with 3 decimals."""
    return {c: st.column_config.NumberColumn(format="%.3f") for c in SCORE_COLUMNS}


# ---------------------------------------------------------------------------- Train page


RECOMMENDED = "recommended"  # the preset holding st.session_state["tr_policy_spec"] (set by open_train_page)


def preset_policies() -> dict:
    """The "Start from policy" choices: :data:`~ssl_viz.augment.POLICIES`, then :data:`RECOMMENDED` (the policy of
    ``st.session_state["tr_policy_spec"]``) once another page has handed one over and it parses."""
    presets = dict(POLICIES)
    try:
        if st.session_state.get("tr_policy_spec"):
            presets[RECOMMENDED] = parse_policy(st.session_state["tr_policy_spec"])
    except ValueError:
        pass
    return presets


def knob_state(preset: str, policy) -> dict[str, object]:
    """The values of preset ``preset``'s knob widgets that show ``policy``: ``{"tr_<preset>_<knob>_on": bool,
    "tr_<preset>_<knob>_value": number}``, each strength clamped to its slider's range and typed like it."""
    out: dict[str, object] = {}
    for knob, (on, value) in knobs_from_policy(policy).items():
        lo, hi = AUGMENT_KNOBS[knob][2], AUGMENT_KNOBS[knob][3]
        out[f"tr_{preset}_{knob}_on"], out[f"tr_{preset}_{knob}_value"] = on, type(lo)(min(max(value, lo), hi))
    return out


def open_train_page(spec: str, dataset: str | None = None, label: str | None = None) -> None:
    """Switch to the Train page with its policy set to ``spec`` (preset :data:`RECOMMENDED`, every knob set to it) and,
    for a built-in dataset, its dataset and label pickers set. Raises ValueError when ``spec`` does not parse."""
    state = st.session_state
    state["tr_policy_spec"], state["tr_preset"] = spec, RECOMMENDED
    state.update(knob_state(RECOMMENDED, parse_policy(spec)))
    if dataset in DATASETS and dataset != "folder":
        state["tr_dataset"] = dataset
        if label:
            state["tr_label"] = label
    st.switch_page("pages/train.py")


def augmentation_knobs(default_policy: str):
    """The "Augmentations" expander: a policy to start from (:func:`preset_policies`), then a toggle and a slider per
    knob of :data:`~ssl_viz.augment.AUGMENT_KNOBS`; returns the resulting policy (an ``AugmentConfig``)."""
    with st.expander("Augmentations", expanded=True):
        presets = preset_policies()
        preset = st.selectbox("Start from policy", list(presets), index=list(presets).index(default_policy), key="tr_preset",
                              format_func=lambda p: f"recommended by Diagnose: {st.session_state['tr_policy_spec']}" if p == RECOMMENDED else p)
        defaults, knobs, cols = knob_state(preset, presets[preset]), {}, st.columns(5)
        for i, (knob, (_, text, lo, hi, step, _)) in enumerate(AUGMENT_KNOBS.items()):
            on = cols[i % 5].toggle(knob, value=defaults[f"tr_{preset}_{knob}_on"], key=f"tr_{preset}_{knob}_on")
            value = cols[i % 5].slider(text, lo, hi, defaults[f"tr_{preset}_{knob}_value"], step, disabled=not on,
                                       key=f"tr_{preset}_{knob}_value")
            knobs[knob] = (on, value)
        policy = policy_from_knobs(presets[preset], knobs)
        st.caption(f"**{describe_policy(policy)}**")
    return policy


def pick_run(runs) -> tuple[str, str]:
    """The "Run" selectbox (key ``tr_watch``) over ``runs`` (:class:`~ssl_viz.jobs.RunStatus`, newest first), keeping the
    watched run, else the newest; returns (run directory, its state)."""
    paths = [str(r.run_dir) for r in runs]
    if st.session_state.get("tr_watch") not in paths:
        st.session_state["tr_watch"] = paths[0]
    states = {str(r.run_dir): r.state for r in runs}
    watched = st.selectbox("Run", paths, key="tr_watch", format_func=lambda p: f"{Path(p).name} · {states[p]}")
    return watched, states[watched]


def live_panel(path: str, was: str) -> None:
    """One run, live: progress, headline numbers, failure reason, log tail, curves, and Cancel / Resume /
    Use as workspace encoder / Delete (asks first). Polls every 2 s while the run is queued, starting or
    running (state ``was`` when the page drew it) and reruns the page when its state changes."""

    @st.fragment(run_every=2 if was in ACTIVE else None)
    def live(path: str, was: str) -> None:
        dispatch_queue(Path(path).parent)
        s = run_status(path)
        if s.state != was:
            st.rerun()  # started or finished: redraw the page (and stop polling when done)
        eta = f" · ETA {s.eta_s:.0f} s" if s.eta_s is not None else ""
        st.progress(min(1.0, s.progress), text=f"**{s.state}** · step {s.step}/{s.total_text} · {s.elapsed:.0f} s{eta}")
        df = curve_frame(path)
        m = st.columns(5)
        for col, (name, text) in zip(m, live_tiles(df)):
            col.metric(name, text)
        m[4].metric("device", s.device or "—")
        if s.state in ("crashed", "failed", "diverged"):
            st.error(f"Run {s.state}: {(s.reason or 'no reason recorded').splitlines()[0]}")
        with st.expander("log.txt (last lines)"):
            st.code(log_tail(path) or "(empty)", language="text")
        st.plotly_chart(live_figure(df), width="stretch", key="tr_live_chart")
        try:
            _run_controls(path, s)
        except JobError as exc:
            st.error(str(exc))

    live(path, was)


def _run_controls(path: str, s) -> None:
    """Cancel, Resume, Use as workspace encoder, Delete… (with a confirmation) for run ``path`` in state ``s``."""
    b = st.columns(4)
    if s.active and b[0].button("Cancel", key="tr_cancel"):
        cancel_run(path)
        st.rerun()
    if s.resumable and b[1].button("Resume", key="tr_resume", help="continue from the last checkpoint"):
        resume_run(path)
        st.rerun()
    if s.has_checkpoint and b[2].button("Use as workspace encoder", key="tr_use"):
        st.session_state["ws_model"], st.session_state["ws_encoder"] = path, None
        st.rerun()
    if not s.active and b[3].button("Delete…", key="tr_delete"):
        st.session_state["tr_confirm"] = path
    if st.session_state.get("tr_confirm") == path:
        st.warning(f"Delete **{Path(path).name}** with its checkpoint and curves? This cannot be undone.")
        yes, no = st.columns(2)
        if yes.button("Yes, delete it", key="tr_delete_yes"):
            del st.session_state["tr_confirm"]
            delete_run(path)
            st.rerun()
        if no.button("Keep it", key="tr_delete_no"):
            del st.session_state["tr_confirm"]
            st.rerun(scope="fragment")


# ---------------------------------------------------------------------------- Runs page


def runs_status_table(runs) -> None:
    """Every run's row of :func:`~ssl_viz.analysis.runs.run_table`, refreshed every 3 s while one is active;
    the page reruns when a run starts or stops."""
    was_active = any(r.active for r in runs)

    @st.fragment(run_every=3 if was_active else None)
    def status_table() -> None:
        current = run_table(list_runs())
        st.dataframe(current[TABLE_COLUMNS], hide_index=True, width="stretch", column_config=score_format())
        if any(current["status"].isin(ACTIVE)) != was_active:
            st.rerun()

    status_table()


def use_as_workspace_encoder(table, current_model: str) -> None:
    """A picker of the runs with a checkpoint (key ``runs_use``) and a button (``runs_use_btn``) that makes it the workspace encoder."""
    ready = list(table.loc[table["checkpoint"], "run"])
    if not ready:
        return
    paths = dict(zip(table["run"], table["path"]))
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    current = Path(current_model).name
    pick = c1.selectbox("Run with a checkpoint", ready, index=ready.index(current) if current in ready else 0, key="runs_use")
    if c2.button("Use as workspace encoder", key="runs_use_btn", help="every view then looks at this run's encoder"):
        st.session_state["ws_model"], st.session_state["ws_encoder"] = paths[pick], None
        st.rerun()


def evolution_view(chosen: list[str], paths: dict[str, str]) -> None:
    """The animated embedding snapshots of one of the ``chosen`` runs (name -> run directory in ``paths``),
    projected with PCA or UMAP (keys ``runs_evo_run``, ``runs_evo_proj``, chart ``runs_evo``)."""
    with_evo = [n for n in chosen if has_evolution(paths[n])]
    if not with_evo:
        st.info("None of the chosen runs has snapshots yet (evolution.npz is written at each kNN-monitor step).")
        return
    c1, c2 = st.columns(2)
    name = c1.selectbox("Run", with_evo, key="runs_evo_run")
    proj = c2.radio("Projection", ["PCA", "UMAP"], horizontal=True, key="runs_evo_proj",
                    help="PCA: rotate every snapshot onto the last, project on its two main axes (fast). UMAP: one map per snapshot, aligned.")
    evo = load_evolution(paths[name])
    if evo is None or len(evo.steps) == 0:
        st.error(f"{name}: evolution.npz cannot be read.")
        return
    key = {"run": paths[name], "snapshots": [int(s) for s in evo.steps]}
    try:
        with st.spinner(f"Projecting {len(evo.steps)} snapshots with {proj}…"):
            coords, steps = evolution_frames(evo, proj.lower(), max_frames=30 if proj == "PCA" else 12, cache_key=key)
    except Exception as exc:  # a projection failure must not take the page down
        st.error(f"Cannot project the snapshots: {exc}")
        return
    st.plotly_chart(evolution_figure(coords, evo.labels, steps, evo.class_names, title=f"{name}: {len(steps)} snapshots"),
                    width="stretch", key="runs_evo")
