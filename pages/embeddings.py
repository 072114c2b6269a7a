"""Embeddings: a 2-D / 3-D map of the representation, coloured by label, factor or cluster; select points to see them."""

import numpy as np
import streamlit as st
import torch

from ssl_viz.analysis.embedding_metrics import MIN_POINTS, embedding_metrics
from ssl_viz.analysis.images import make_grid, to_hwc_uint8
from ssl_viz.analysis.projection import kmeans_labels
from ssl_viz.cache import fingerprint
from ssl_viz.ui.data_views import PROJECTIONS, project_with_spinner, sample_size_picker
from ssl_viz.ui.loaders import dataset_or_stop, get_embeddings, get_model
from ssl_viz.ui.plots import add_thumbnails, projection_scatter, selected_positions
from ssl_viz.ui.workspace import current_workspace

st.title("Embeddings")
st.markdown("Each dot is one test image placed by its embedding $z = f(x)$. Contrastive training pulls views of the same image "
            "together and spreads everything else over the sphere, so classes form clusters only as far as the augmentations "
            "preserved what separates them. Maps use unit vectors, where distance is a function of cosine similarity:")
st.latex(r"\|\hat z_i - \hat z_j\|^2 = 2 - 2\cos(z_i, z_j), \qquad \hat z = z / \|z\|")

ws = current_workspace()
ds = dataset_or_stop(ws)

c1, c2, c3, c4 = st.columns(4)
method = c1.selectbox("Method", list(PROJECTIONS), key="emb_method")
dims = c2.radio("Dimensions", [2, 3], horizontal=True, format_func=lambda d: f"{d}-D", key="emb_dims")
n = sample_size_picker(c3, "Points", len(ds), key="emb_n")
color = c4.selectbox("Colour by", ["label", *ds.factors, "k-means cluster"], key="emb_color")
try:
    emb, idx = get_embeddings(ws.model, ws.dataset, "test", ws.representation, n, ws.encoder)
except Exception as exc:
    st.error(f"Cannot embed {ws.dataset} with this model: {exc}")
    st.stop()

key = {"model": fingerprint(ws.model), "dataset": ws.dataset, "rep": ws.representation, "n": len(idx)}
coords = project_with_spinner(emb, key, method, dims)

labels = ds.labels[torch.as_tensor(idx)].numpy()
if color == "label":
    values, names = labels, ds.class_names
elif color in ds.factors:
    values, names = np.asarray(ds.factors[color])[idx], ds.factor_names.get(color)
else:
    k = st.slider("Clusters (k)", 2, 30, max(2, min(ds.num_classes, 30)), key="emb_k")
    values, names = kmeans_labels(emb, k), None
hover = [f"#{i} · {ds.class_names[y] if 0 <= y < ds.num_classes else 'unlabelled'}" for i, y in zip(idx, labels)]
fig = projection_scatter(coords, values, names, color_title=color, hover=hover)
if dims == 2 and st.toggle("Show image thumbnails on the map (a fixed sample of 200)", key="emb_thumbs"):
    shown_at = np.random.default_rng(0).choice(len(idx), size=min(200, len(idx)), replace=False)
    add_thumbnails(fig, coords[shown_at], [to_hwc_uint8(ds.images[int(idx[i])]) for i in shown_at])
if dims == 2:
    event = st.plotly_chart(fig, on_select="rerun", selection_mode=("box", "lasso"), key="emb_chart")
else:
    event = None
    st.plotly_chart(fig, key="emb_chart3d")
    st.caption("Drag to rotate. Box/lasso selection works in the 2-D map.")

if len(idx) >= MIN_POINTS:  # Wang & Isola (2020): alignment of positives, uniformity on the sphere; kNN on labels
    q = embedding_metrics(emb, labels if ds.has_labels else None, get_model(ws.model, ws.encoder).embed_fn(ws.representation), ds.images, idx)
    m1, m2, m3 = st.columns(3)
    if q.knn_top1 is not None:
        m1.metric("kNN top-1 (half / half of the sample)", f"{q.knn_top1:.1%}")
    m2.metric("Uniformity (lower = more spread)", f"{q.uniformity:.3f}")
    m3.metric("Alignment of 2 simclr views (lower = closer)", f"{q.alignment:.3f}")

chosen = selected_positions(event)
if len(chosen):
    shown = chosen[:96]
    side = ds.image_size[0]
    grid = make_grid([to_hwc_uint8(ds.images[int(i)]) for i in idx[shown]], ncols=16, upscale=max(1, 48 // side))
    st.subheader(f"{len(chosen)} selected" + (f" (first {len(shown)} shown)" if len(chosen) > len(shown) else ""))
    st.image(grid, caption=", ".join(hover[i] for i in shown[:24]) + (" …" if len(shown) > 24 else ""))
elif dims == 2:
    st.info("Draw a box or lasso on the map to see the selected images here.")
