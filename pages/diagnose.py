"""Diagnose augmentations: how strong can each augmentation be before it damages this dataset's label? Dose-response
curves, the policy they recommend, training runs that check it, and the images before and after."""

import streamlit as st

from ssl_viz.analysis.diagnosis import attach_ablation, report_stem
from ssl_viz.augment import SINGLE_TRANSFORMS
from ssl_viz.sweeps import sweep_states
from ssl_viz.ui import diagnosis as ui
from ssl_viz.ui.loaders import dataset_or_stop
from ssl_viz.ui.workspace import current_workspace

st.title("Diagnose augmentations")
st.markdown("A contrastive encoder learns to ignore its augmentations, so an augmentation strong enough to change what defines "
            "the label teaches it to confuse classes (rotating an orientation-labelled texture, grayscale for colour labels). "
            "A fixed, encoder-free probe is trained on clean images and tested on transformed ones (and a second one also on "
            "transformed ones): its accuracy drop, above chance, is the **label damage**, measured here at five strengths of "
            "each augmentation. The encoder's **invariance** says what it already ignores.")
st.latex(r"\text{damage}_T = \min_{\text{probe}} \frac{a_{\text{clean}} - a_{T}}{a_{\text{clean}} - a_{\text{chance}}}, \qquad "
         r"\text{invariance}_T = \frac{s(x, Tx) - s(x, x')}{1 - s(x, x')}, \quad s(a, b) = \mathbb{E}\cos(f(a), f(b))")

ws = current_workspace()
test_ds = dataset_or_stop(ws)
c1, c2, c3 = st.columns(3)
labels = list(test_ds.factors) or [None]
current = ws.label or test_ds.label_factor
label = c1.selectbox("Label", labels, index=labels.index(current) if current in labels else 0, key="diag_label",
                     format_func=lambda v: v or "class label", help="What the classes are; datasets with factors can be relabelled.")
n = c2.select_slider("Training images", [300, 600, 1000, 2000, 3000], value=600, key="diag_n")
use_encoder = c3.toggle("Measure the encoder", True, key="diag_encoder")
names = st.multiselect("Augmentations", SINGLE_TRANSFORMS, default=SINGLE_TRANSFORMS, key="diag_augs")
if not names:
    st.info("Pick at least one augmentation.")
    st.stop()
resp = ui.dose_response_or_stop(ws, label, n, names, use_encoder)
title = ui.dataset_title(ws.dataset, label)

st.header(f"Dose-response on {title}", divider="gray")
ui.dose_chart(resp, title)
ui.dose_table(resp)

st.header("Recommended policy", divider="gray")
ui.recommended_policy_panel(resp.recommended_policy, ws.dataset, label, image_size=min(test_ds.image_size))

st.header("Proof by training", divider="gray")
ui.verification_panel(ws.dataset, label, resp.recommended_policy)

st.header("See it", divider="gray")
strength = st.select_slider("Strength", resp.strengths, value=resp.strengths[len(resp.strengths) // 2], key="diag_strength",
                            help="The dose shown below: a magnitude (1 = strongest), the probability for flip, grayscale and rotate90.")
diag = resp.at(strength)
sweep, states = st.session_state.get("diag_sweep"), {}
if sweep:
    sweep_mode, _, states = sweep_states(sweep)
    if all(s == "done" for s in states.values()):
        attach_ablation(diag, ui.sweep_accuracies(sweep, ws.dataset, label, n), sweep_mode)
ui.example_strips(ws.dataset, label, diag)
with st.expander(f"Every number at strength {strength:g}"):
    ui.diagnosis_metrics(diag)
    ui.diagnosis_table(diag)
    for a in sorted(diag.augmentations, key=lambda a: -a.label_damage):
        st.markdown(f"- **{a.name}** ({a.verdict}): {a.explanation}")
d1, d2 = st.columns(2)
stem = report_stem(ws.dataset, label)
d1.download_button("Download dose-response (JSON)", resp.to_json(), f"{stem}-dose.json", "application/json", key="diag_json")
d2.download_button(f"Download strength {strength:g} (CSV)", diag.to_csv(), f"{stem}.csv", "text/csv", key="diag_csv")
ui.ablation_panel(ws.dataset, label, names, sweep, states)
