"""Negatives & bias: each anchor's hardest negatives, how many negatives are false, and which classes are served badly."""

import streamlit as st

from ssl_viz.analysis.images import to_hwc_uint8, upscale
from ssl_viz.analysis.negatives import (
    batch_hardest_negatives,
    bias_figure,
    class_counts,
    compare_bias,
    expected_false_negative_rate,
    false_negative_figure,
    false_negative_table,
    sampled_class_bias,
)
from ssl_viz.ui.data_views import labelled_workspace_or_stop
from ssl_viz.ui.links import range_or_default
from ssl_viz.ui.loaders import get_embeddings
from ssl_viz.ui.workspace import available_models

st.title("Negatives & bias")
st.markdown("Every other image of a batch is a negative, but some share the anchor's class: **false negatives** that the loss "
            "pushes away although they should be close. Their share does not depend on the batch size, only on how many classes "
            "there are; larger batches just hold more of them. The debiased loss (Chuang et al. 2020) subtracts their expected "
            "contribution with a class prior $\\tau^+$ (`--tau-plus`); per-class numbers show which classes a representation serves badly.")
st.latex(r"\mathbb{E}[\mathrm{FN}] = \sum_c \frac{n_c (n_c - 1)}{N (N - 1)} \xrightarrow{N \to \infty} \sum_c p_c^2, \qquad "
         r"P(\geq 1 \text{ in } B) = 1 - \sum_c \frac{n_c}{N} \binom{N - n_c}{B - 1} \Big/ \binom{N - 1}{B - 1}")

ws, model, test_ds, train_ds = labelled_workspace_or_stop("false negatives and per-class numbers need classes", min_classes=2)
st.subheader("Hardest negatives of a batch")
c1, c2, c3 = st.columns(3)
b = c1.slider("Batch size", 8, 128, 32, 8, key="neg_batch")
k = c2.slider("Negatives shown", 3, 10, 6, key="neg_k")
seed = c3.number_input("Seed", 0, 1_000_000, 0, key="neg_seed")
try:
    pick, hard = batch_hardest_negatives(model.embed_fn(ws.representation), test_ds, b, k, seed=int(seed))
except Exception as exc:
    st.error(f"Cannot embed a batch of {ws.dataset} with this model: {exc}")
    st.stop()
anchor = st.slider("Anchor (position in the batch)", 0, range_or_default("neg_anchor", 0, len(pick) - 1), 0, key="neg_anchor")  # a link's anchor may not fit
label_of = lambda j: test_ds.class_names[int(test_ds.labels[pick[j]])]  # noqa: E731
st.image(upscale(to_hwc_uint8(test_ds.images[pick[anchor]]), 96), caption=f"anchor: {label_of(anchor)}")
negs = hard.indices[anchor].tolist()
st.image([upscale(to_hwc_uint8(test_ds.images[pick[j]]), 72) for j in negs],
         caption=[f"cos {s:.2f} · {label_of(j)}{' ✗ false' if f else ''}" for j, s, f in
                  zip(negs, hard.similarity[anchor].tolist(), hard.same_class[anchor].tolist())])
m1, m2 = st.columns(2)
m1.metric("False negatives among the hardest (whole batch)", f"{hard.false_negative_share:.1%}")
m2.metric("… among random negatives (expected)", f"{expected_false_negative_rate(class_counts(test_ds.labels)):.1%}",
          help="The hardest negatives are far more often of the anchor's class: pushing them away hurts most.")

st.subheader("False negatives vs batch size and number of classes")
c = train_ds.num_classes
choices = sorted({x for x in (2, 3, 5, c // 2, c) if 2 <= x <= c})
classes = st.multiselect("Number of classes (the first C classes of the training set)", choices, default=[choices[0], c], key="neg_classes")
sizes = st.multiselect("Batch sizes", [4, 8, 16, 32, 64, 128, 256, 512], default=[8, 32, 128, 512], key="neg_sizes")
table = false_negative_table(train_ds.labels.numpy(), sorted(sizes), sorted(classes) or [c], n_batches=100)
if table.empty:
    st.info("Pick at least one batch size smaller than the data.")
else:
    st.plotly_chart(false_negative_figure(table), key="neg_fn_chart")
    st.dataframe(table, hide_index=True, key="neg_fn_table", column_config={col: st.column_config.NumberColumn(format="%.4f")
                 for col in table.columns if col not in ("classes", "batch_size", "images")})

st.subheader("Bias: which classes the representation serves badly (and does debiasing help?)")
n = st.select_slider("Images per split", [500, 1000, 2000, 5000], value=1000, key="neg_n")
others = {str(p): label for label, p, _ in available_models() if str(p) != ws.model}
other = st.selectbox("Compare with (e.g. the same run trained with --tau-plus 0.1)", [None, *others], key="neg_other",
                     format_func=lambda o: "—" if o is None else others.get(o, o))
sources = {f"{model.name} (workspace)": (ws.model, ws.encoder), **({others[other]: (other, None)} if other else {})}
try:
    tables = {name: sampled_class_bias(*(get_embeddings(src, ws.dataset, split, ws.representation, n, enc) for split in ("train", "test")),
                                       train_ds.labels, test_ds.labels, test_ds.class_names) for name, (src, enc) in sources.items()}
except Exception as exc:
    st.error(f"Cannot compute the per-class numbers: {exc}")
    st.stop()
st.plotly_chart(bias_figure(tables), key="neg_bias_chart")
st.dataframe(compare_bias(tables), hide_index=True, key="neg_bias_table")
st.caption("Uniformity per class: log E exp(-2‖z_i - z_j‖²) over the class's test embeddings; near 0 the class collapsed to a "
           "point, very negative it is spread out. Train a debiased run with `python -m ssl_viz train ... --tau-plus 0.1`.")
