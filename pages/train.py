"""Train: configure a contrastive run, start it in a background process, watch it live; cancel, resume or delete it."""

import shlex
from dataclasses import replace
from pathlib import Path

import streamlit as st

from ssl_viz.analysis.runs import curve_frame, latest, live_figure
from ssl_viz.augment import POLICIES, describe_policy, policy_to_spec
from ssl_viz.config import MethodConfig, TrainConfig, suggested_lr
from ssl_viz.data import DATASETS
from ssl_viz.encoders import ENCODERS
from ssl_viz.jobs import (
    AUGMENT_KNOBS,
    JobError,
    cancel_run,
    cli_args,
    delete_run,
    dispatch_queue,
    knobs_from_policy,
    list_runs,
    log_tail,
    max_runs,
    policy_from_knobs,
    resume_run,
    run_status,
    start_run,
)
from ssl_viz.methods import METHODS
from ssl_viz.ui.loaders import get_dataset
from ssl_viz.ui.workspace import current_workspace

st.title("Train")
st.markdown("Train an encoder with no labels: the method pulls two augmented views of an image together and pushes other images "
            "away, so the **augmentations you switch on decide what the encoder learns to ignore**. The run trains in a background "
            "process (closing the tab does not stop it); labels are used only by the kNN monitor, whose accuracy rises as classes "
            f"separate while alignment falls and uniformity spreads the embeddings. At most {max_runs()} run(s) train at once; "
            "others wait in a queue.")

D, M = TrainConfig(), MethodConfig()
ws = current_workspace()
c1, c2, c3 = st.columns(3)
method = c1.selectbox("Method", list(METHODS), index=list(METHODS).index(D.method), key="tr_method")
encoder = c1.selectbox("Encoder", list(ENCODERS), index=list(ENCODERS).index(D.encoder), key="tr_encoder",
                       format_func=lambda e: f"{e} — {ENCODERS[e]}")
width = c1.select_slider("Width", [8, 16, 32, 64], value=D.encoder_width, key="tr_width") if encoder in ("small-cnn", "resnet18-cifar") else D.encoder_width
names = [n for n in DATASETS if n != "folder"]
dataset = c2.selectbox("Dataset", names, index=names.index(ws.dataset) if ws.dataset in names else 0, key="tr_dataset")
try:
    ds = get_dataset(dataset, "train")
except Exception as exc:  # a missing dataset must not take the page down
    st.error(f"Cannot load {dataset}: {exc}")
    st.stop()
label = c2.selectbox("Label factor (kNN monitor)", list(ds.factors), key="tr_label") if ds.factors else None
batch = c2.select_slider("Batch size", [16, 32, 64, 128, 256, 512, 1024], value=D.batch_size, key="tr_batch")
tau = c2.slider("Temperature τ", 0.05, 1.0, M.temperature, 0.01, key="tr_tau")
budget = c3.radio("Budget", ["epochs", "seconds"], horizontal=True, key="tr_budget")
amount = c3.number_input("Epochs" if budget == "epochs" else "Seconds", min_value=0.1 if budget == "epochs" else 5.0,
                         value=D.epochs if budget == "epochs" else 300.0, key=f"tr_amount_{budget}")
seed = c3.number_input("Seed", 0, 10**6, D.seed, key="tr_seed")
knn_every = c3.number_input("kNN monitor every (steps, 0 = off)", 0, 10**6, D.knn_every, key="tr_knn")
lr = c3.number_input("Peak learning rate (AdamW)", 1e-5, 1.0, suggested_lr(encoder), format="%.4g", key=f"tr_lr_{encoder}")

with st.expander("Augmentations", expanded=True):
    preset = st.selectbox("Start from policy", list(POLICIES), index=list(POLICIES).index(D.augment), key="tr_preset")
    defaults, knobs, cols = knobs_from_policy(POLICIES[preset]), {}, st.columns(5)
    for i, (knob, (_, text, lo, hi, step, _)) in enumerate(AUGMENT_KNOBS.items()):
        on = cols[i % 5].toggle(knob, value=defaults[knob][0], key=f"tr_{preset}_{knob}_on")
        value = cols[i % 5].slider(text, lo, hi, type(lo)(min(max(defaults[knob][1], lo), hi)), step, disabled=not on,
                                   key=f"tr_{preset}_{knob}_value")
        knobs[knob] = (on, value)
    policy = policy_from_knobs(POLICIES[preset], knobs)
    st.caption(f"**{describe_policy(policy)}**")

cfg = replace(D, method=method, encoder=encoder, encoder_width=width, dataset=dataset, dataset_label=label, augment=policy_to_spec(policy),
              batch_size=batch, lr=float(lr), seed=int(seed), knn_every=int(knn_every), method_cfg=replace(M, temperature=tau),
              **({"epochs": float(amount)} if budget == "epochs" else {"time_budget": float(amount)}))
try:
    st.code("python -m ssl_viz train " + shlex.join(cli_args(cfg)), language="bash")
except JobError as exc:
    st.error(str(exc))
if st.button("Start training", type="primary", key="tr_start"):
    try:
        st.session_state["tr_watch"] = str(start_run(cfg))
    except (JobError, ValueError, OSError) as exc:
        st.error(f"Cannot start: {exc}")

st.subheader("Live")
runs = list_runs()
if not runs:
    st.info("No runs yet: set a configuration above and press **Start training**.")
    st.stop()
paths = [str(r.run_dir) for r in runs]
if st.session_state.get("tr_watch") not in paths:
    st.session_state["tr_watch"] = paths[0]
states = {str(r.run_dir): r.state for r in runs}
watched = st.selectbox("Run", paths, key="tr_watch", format_func=lambda p: f"{Path(p).name} · {states[p]}")


@st.fragment(run_every=2 if states[watched] in ("queued", "starting", "running") else None)
def live(path: str, was: str) -> None:
    dispatch_queue(Path(path).parent)
    s = run_status(path)
    if s.state != was:
        st.rerun()  # started or finished: redraw the page (and stop polling when done)
    eta = f" · ETA {s.eta_s:.0f} s" if s.eta_s is not None else ""
    st.progress(min(1.0, s.progress), text=f"**{s.state}** · step {s.step}/{s.total_steps or '?'} · {s.elapsed:.0f} s{eta}")
    df = curve_frame(path)
    m = st.columns(5)
    for col, (name, key, fmt) in zip(m, [("loss", "loss", "{:.4f}"), ("learning rate", "lr", "{:.2e}"), ("kNN top-1", "knn_top1", "{:.1%}"),
                                         ("images / s", "images_per_s", "{:.0f}")]):
        value = latest(df, key)
        col.metric(name, fmt.format(value) if value is not None else "—")
    m[4].metric("device", s.device or "—")
    if s.state in ("crashed", "failed", "diverged"):
        st.error(f"Run {s.state}: {(s.reason or 'no reason recorded').splitlines()[0]}")
    with st.expander("log.txt (last lines)"):
        st.code(log_tail(path) or "(empty)", language="text")
    st.plotly_chart(live_figure(df), width="stretch", key="tr_live_chart")
    b = st.columns(4)
    try:
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
    except JobError as exc:
        st.error(str(exc))


live(watched, states[watched])
