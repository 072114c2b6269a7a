"""Diagnose augmentations: does each augmentation keep this dataset's label? Label damage, encoder invariance, consequence."""

import time

import streamlit as st

from ssl_viz.analysis.diagnosis import VERDICT_COLORS, ablation_results, attach_ablation, diagnose, diagnosis_figure, launch_ablation, load_sweep, run_state
from ssl_viz.augment import SINGLE_TRANSFORMS
from ssl_viz.config import TrainConfig
from ssl_viz.paths import cache_dir
from ssl_viz.ui.loaders import dataset_or_stop, get_dataset, get_model
from ssl_viz.ui.workspace import current_workspace

st.title("Diagnose augmentations")
st.markdown("A contrastive encoder learns to ignore its augmentations, so an augmentation that changes what defines the label "
            "teaches it to confuse classes (rotating an orientation-labelled texture, grayscale for colour labels). A fixed, "
            "encoder-free probe is trained on clean images and tested on transformed ones (and a second one also on transformed "
            "ones): its accuracy drop, above chance, is the **label damage**. The encoder's **invariance** says what it already ignores.")
st.latex(r"\text{damage}_T = \min_{\text{probe}} \frac{a_{\text{clean}} - a_{T}}{a_{\text{clean}} - a_{\text{chance}}}, \qquad "
         r"\text{invariance}_T = \frac{s(x, Tx) - s(x, x')}{1 - s(x, x')}, \quad s(a, b) = \mathbb{E}\cos(f(a), f(b))")

ws = current_workspace()
test_ds = dataset_or_stop(ws)

c1, c2, c3, c4 = st.columns(4)
labels = list(test_ds.factors) or [None]
current = ws.label or test_ds.label_factor
label = c1.selectbox("Label", labels, index=labels.index(current) if current in labels else 0, key="diag_label",
                     format_func=lambda v: v or "class label", help="What the classes are; datasets with factors can be relabelled.")
n = c2.select_slider("Training images", [300, 600, 1000, 2000, 3000], value=600, key="diag_n")
strength = c3.slider("Strength", 0.1, 1.0, 1.0, 0.1, key="diag_strength", help="Magnitude of each augmentation (1 = strongest).")
use_encoder = c4.toggle("Measure the encoder", True, key="diag_encoder")
names = st.multiselect("Augmentations", SINGLE_TRANSFORMS, default=SINGLE_TRANSFORMS, key="diag_augs")


@st.cache_data(max_entries=8, show_spinner=False)
def run_diagnosis(model: str, encoder: str | None, dataset: str, label: str | None, n: int, strength: float, names: tuple,
                  use_encoder: bool, representation: str):
    train = get_dataset(dataset, "train", label).head(n)
    test = get_dataset(dataset, "test", label).head(max(150, n // 2))
    bar = st.progress(0.0, text="Diagnosing…")
    loaded = get_model(model, encoder) if use_encoder else None
    diag = diagnose(train, test, loaded.embed_fn(representation) if loaded else None, list(names), strength,
                    encoder_name=loaded.name if loaded else None, progress=lambda f, t: bar.progress(min(1.0, f), text=t))
    bar.empty()
    return diag


if not names:
    st.info("Pick at least one augmentation.")
    st.stop()
try:
    diag = run_diagnosis(ws.model, ws.encoder, ws.dataset, label, n, strength, tuple(names), use_encoder, ws.representation)
except Exception as exc:
    st.error(f"Cannot diagnose {ws.dataset}: {exc}")
    st.stop()

m1, m2, m3, m4 = st.columns(4)
m1.metric("Probe, clean test", f"{diag.probe_clean:.3f}", help=f"Ridge probe on: {', '.join(diag.probe_groups)}")
m2.metric("Chance", f"{diag.chance:.3f}")
m3.metric("Encoder kNN top-1", "—" if diag.knn_top1 is None else f"{diag.knn_top1:.3f}")
m4.metric("Encoder linear top-1", "—" if diag.linear_top1 is None else f"{diag.linear_top1:.3f}")



@st.cache_data(max_entries=4, show_spinner="Evaluating the sweep's runs…")
def sweep_accuracies(manifest: str, dataset: str, label: str | None, n: int) -> dict:
    return ablation_results(load_sweep(manifest)[1], get_dataset(dataset, "train", label).head(n), get_dataset(dataset, "test", label))


sweep = st.session_state.get("diag_sweep")
if sweep:
    sweep_mode, dirs = load_sweep(sweep)
    states = {k: run_state(d) for k, d in dirs.items()}
    if all(s == "done" for s in states.values()):
        attach_ablation(diag, sweep_accuracies(sweep, ws.dataset, label, n), sweep_mode)

st.plotly_chart(diagnosis_figure(diag), key="diag_chart")
cols = ["name", "verdict", "label_damage", "probe_transformed", "probe_adapted", "image_change", "invariance", "sim_aug", "ablation_delta"]
table = diag.table()[cols].style.map(lambda v: f"background-color: {VERDICT_COLOURS[v]}40", subset=["verdict"])
st.dataframe(table, hide_index=True, key="diag_table", column_config={c: st.column_config.NumberColumn(format="%.3f") for c in cols[2:]})
for a in sorted(diag.augmentations, key=lambda a: -a.label_damage):
    st.markdown(f"- **{a.name}** ({a.verdict}): {a.explanation}")
d1, d2 = st.columns(2)
stem = f"diagnosis-{ws.dataset.replace(':', '_').replace('/', '_')}-{label or 'label'}"
d1.download_button("Download JSON", diag.to_json(), f"{stem}.json", "application/json", key="diag_json")
d2.download_button("Download CSV", diag.to_csv(), f"{stem}.csv", "text/csv", key="diag_csv")

with st.expander("Ablation sweep: short training runs with each augmentation added or removed"):
    a1, a2, a3 = st.columns(3)
    mode = a1.radio("Mode", ["add", "remove"], horizontal=True, key="diag_abl_mode")
    budget = a2.number_input("Seconds per run", 10, 3600, 60, 10, key="diag_abl_budget")
    base = a3.text_input("Base policy", "crop+flip" if mode == "add" else "simclr", key="diag_abl_base")
    st.caption(f"{len(names) + 1} SimCLR runs (small-cnn) in the background, queued with the Runs page's runs: "
               f"about {(len(names) + 1) * budget / 60:.0f} min of training. The table's ablation_delta is the kNN accuracy "
               "the augmentation adds (mode add) or that removing it costs (mode remove).")
    if st.button("Launch sweep", key="diag_abl_go"):
        cfg = TrainConfig(method="simclr", encoder="small-cnn", encoder_width=16, dataset=ws.dataset, dataset_label=label,
                          augment=base, batch_size=128, knn_every=0)
        try:
            manifest = cache_dir() / "ablation" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
            launch_ablation(cfg, names, mode, float(budget), manifest=manifest)
            st.session_state["diag_sweep"] = str(manifest)
            st.rerun()
        except Exception as exc:
            st.error(f"Cannot launch the sweep: {exc}")
    if sweep:
        done = sum(s == "done" for s in states.values())
        st.progress(done / len(states), text=f"Sweep: {done}/{len(states)} runs done · " + ", ".join(f"{k}: {s}" for k, s in states.items()))
        st.button("Refresh", key="diag_abl_refresh")
