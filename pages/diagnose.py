"""Diagnose augmentations: does each augmentation keep this dataset's label? Label damage, encoder invariance, consequence."""

import streamlit as st

from ssl_viz.analysis.diagnosis import attach_ablation, diagnosis_figure, report_stem
from ssl_viz.augment import SINGLE_TRANSFORMS
from ssl_viz.sweeps import sweep_states
from ssl_viz.ui.diagnosis import ablation_panel, cached_diagnosis, diagnosis_metrics, diagnosis_table, sweep_accuracies
from ssl_viz.ui.loaders import dataset_or_stop
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

if not names:
    st.info("Pick at least one augmentation.")
    st.stop()
try:
    diag = cached_diagnosis(ws.model, ws.encoder, ws.dataset, label, n, strength, tuple(names), use_encoder, ws.representation)
except Exception as exc:
    st.error(f"Cannot diagnose {ws.dataset}: {exc}")
    st.stop()
diagnosis_metrics(diag)

sweep, states = st.session_state.get("diag_sweep"), {}
if sweep:
    sweep_mode, _, states = sweep_states(sweep)
    if all(s == "done" for s in states.values()):
        attach_ablation(diag, sweep_accuracies(sweep, ws.dataset, label, n), sweep_mode)

st.plotly_chart(diagnosis_figure(diag), key="diag_chart")
diagnosis_table(diag)
for a in sorted(diag.augmentations, key=lambda a: -a.label_damage):
    st.markdown(f"- **{a.name}** ({a.verdict}): {a.explanation}")
d1, d2 = st.columns(2)
stem = report_stem(ws.dataset, label)
d1.download_button("Download JSON", diag.to_json(), f"{stem}.json", "application/json", key="diag_json")
d2.download_button("Download CSV", diag.to_csv(), f"{stem}.csv", "text/csv", key="diag_csv")
ablation_panel(ws.dataset, label, names, sweep, states)
