"""Pairs & negatives: one SimCLR batch laid open, from augmented views to each anchor's softmax and loss."""

import pandas as pd
import streamlit as st

from ssl_viz.analysis.images import to_hwc_uint8, upscale
from ssl_viz.analysis.pairs import sampled_contrastive_batch
from ssl_viz.augment import POLICIES, describe_params, describe_policy, parse_policy
from ssl_viz.ui.loaders import workspace_or_stop
from ssl_viz.ui.plots import similarity_heatmap, softmax_bars

st.title("Pairs & negatives")
st.markdown("A batch of $N$ images gives $2N$ augmented views. For each anchor view $i$ the **positive** $j(i)$ is the other "
            "view of the same image; the other $2N-2$ views are **negatives**. The loss is a softmax classification: find the "
            "positive among $2N-1$ candidates by cosine similarity, sharpened by the temperature $\\tau$ (SimCLR, eq. 1).")
st.latex(r"\ell_i = -\log \frac{\exp(\mathrm{sim}(z_i, z_{j(i)})/\tau)}{\sum_{k \neq i} \exp(\mathrm{sim}(z_i, z_k)/\tau)},"
         r"\qquad \mathcal{L} = \frac{1}{2N}\sum_{i=1}^{2N} \ell_i")

ws, model, ds = workspace_or_stop()

c1, c2, c3, c4 = st.columns(4)
policy = c1.selectbox("Augmentation policy", [*POLICIES, "custom"], index=list(POLICIES).index("simclr"), key="pairs_policy")
n = c2.slider("Batch size N", 4, 16, 8, key="pairs_n")
seed = c3.number_input("Seed", 0, 1_000_000, 0, key="pairs_seed")
tau = c4.slider("Temperature τ", 0.05, 1.0, 0.5, 0.05, key="pairs_tau")
spec = st.text_input("Policy spec (preset+field=value,…)", "simclr+rotate90_p=0.5", key="pairs_spec") if policy == "custom" else policy
reps = model.representations()
rep = st.radio("Embedding the loss sees", reps, index=reps.index("projector") if "projector" in reps else 0, horizontal=True, key="pairs_rep")
try:
    cfg = parse_policy(spec)
    pick, cb = sampled_contrastive_batch(model.embed_fn(rep), ds.images, n, cfg, temperature=tau, seed=int(seed))
except Exception as exc:
    st.error(f"Cannot build this batch: {exc}")
    st.stop()
st.caption(f"Policy: {describe_policy(cfg)}")
n = cb.n  # the batch holds at most the dataset's images

labels = [cb.view_label(i) for i in range(2 * n)]
anchor = st.selectbox("Anchor view", range(2 * n), format_func=lambda i: labels[i], key="pairs_anchor")
pos, img = int(cb.positives[anchor]), anchor % n
big = 96 if ds.image_size[0] <= 32 else 160
show = lambda t: upscale(to_hwc_uint8(t), big)  # noqa: E731
left, mid, right = st.columns([1, 1, 2])
y = int(ds.labels[pick[img]])
left.image(show(cb.images[img]), caption=f"image {img + 1} (label {ds.class_names[y] if 0 <= y < ds.num_classes else 'none'})")
mid.image([show(cb.views[anchor]), show(cb.views[pos])], caption=[f"anchor {labels[anchor]}", f"positive {labels[pos]}"])
with right:
    drawn = {labels[v]: describe_params(cb.params[v // n], img) for v in (anchor, pos) if cb.params[v // n] is not None}
    if drawn:
        st.dataframe(pd.DataFrame(drawn).astype(str), width="stretch", height=35 * (len(next(iter(drawn.values()))) + 1) + 3)
st.markdown("**Negatives** of this anchor: every other view in the batch")
negs = [k for k in range(2 * n) if k not in (anchor, pos)]
st.image([upscale(to_hwc_uint8(cb.views[k]), 64) for k in negs], caption=[labels[k] for k in negs])

h, b = st.columns([3, 2])
h.markdown("**Cosine similarity of all 2N views** (green squares: positive pairs; red: the anchor's row)")
h.plotly_chart(similarity_heatmap(cb.similarity.numpy(), cb.positives.numpy(), labels, anchor), key="pairs_heat")
b.plotly_chart(softmax_bars(cb.probabilities[anchor].numpy(), anchor, pos, labels), key="pairs_soft")
m1, m2, m3 = b.columns(3)
m1.metric("p(positive)", f"{float(cb.probabilities[anchor, pos]):.3f}")
m2.metric(f"ℓ of {labels[anchor]}", f"{float(cb.losses[anchor]):.3f}")
m3.metric("batch loss 𝓛", f"{cb.loss:.3f}", help=f"chance level: log(2N-1) = {cb.chance_loss:.3f}")
