"""Retrieval: a query's nearest neighbours in embedding space, precision@K per class, and the worst queries."""

import numpy as np
import streamlit as st
import torch

from ssl_viz.analysis.images import to_hwc_uint8, upscale
from ssl_viz.analysis.retrieval import Retriever, bank_position, per_class_precision, precision_at_k, worst_queries
from ssl_viz.ui.data_views import MAX_PRECISION_QUERIES, SAMPLE_SIZES, sample_size_picker
from ssl_viz.ui.loaders import get_embeddings, view_split, workspace_or_stop
from ssl_viz.ui.plots import precision_bars
from ssl_viz.ui.uploads import uploaded_query_or_stop

st.title("Retrieval")
st.markdown("Rank a bank of images (the test split; every image of your own folder) by cosine similarity to a query's embedding. "
            "A good representation puts images of "
            "the same kind first even though no label was used in training; **precision@K** counts how many of the $K$ "
            "nearest neighbours share the query's label, and the worst queries show where the invariances learned were wrong.")
st.latex(r"\mathrm{P@K}(q) = \frac{1}{K} \sum_{j \in \mathrm{NN}_K(q)} [\,y_j = y_q\,],"
         r"\qquad \mathrm{NN}_K(q) = \operatorname{top\text{-}K}_j \cos(z_q, z_j)")

ws, model, ds = workspace_or_stop()

c1, c2, c3 = st.columns(3)
n = sample_size_picker(c1, "Bank size", len(ds), key="ret_n", n_all=len(ds) if len(ds) > SAMPLE_SIZES[-1] else None)  # all: search every image
k = c2.slider("K", 1, 50, 10, key="ret_k")
mode = c3.radio("Query", ["dataset image", "upload"], horizontal=True, key="ret_mode")
try:
    bank, idx = get_embeddings(ws.model, ws.dataset, view_split(ws.dataset), ws.representation, n, ws.encoder)
except Exception as exc:
    st.error(f"Cannot embed {ws.dataset} with this model: {exc}")
    st.stop()
retriever = Retriever(k=k).fit(bank)
labels = ds.labels[torch.as_tensor(idx)].numpy()
name = lambda y: ds.class_names[y] if 0 <= y < ds.num_classes else "unlabelled"  # noqa: E731
big = lambda img, s=96: upscale(to_hwc_uint8(img), s)  # noqa: E731

if mode == "dataset image":
    qi = int(st.number_input(f"Query: image index (0-{len(ds) - 1})", 0, len(ds) - 1, int(idx[0]), key="ret_query"))
    pos = bank_position(idx, qi)
    in_bank, image, q_label = pos is not None, ds.images[qi:qi + 1], int(ds.labels[qi])
else:
    image = uploaded_query_or_stop("Query image", "ret_upload", "Upload an image: it is converted to the dataset's channels and size "
                                   "before embedding.", ds.channels, ds.image_size)
    in_bank, q_label = False, -1
with torch.inference_mode():
    q = bank[pos:pos + 1] if in_bank else model.embed_fn(ws.representation)(image.float() / 255).numpy()
scores, nn = retriever.query(q, exclude=[pos] if in_bank else None)

left, right = st.columns([1, 4])
q_name = name(q_label) if mode == "dataset image" else "uploaded"
left.image(big(image[0], 128), caption=f"query · {q_name}" + (" (in the bank, left out)" if in_bank else ""))
if q_label >= 0 and ds.has_labels:
    left.metric(f"precision@{k}", f"{precision_at_k(labels[nn], [q_label])[0]:.2f}")
right.image([big(ds.images[int(idx[j])]) for j in nn[0]], caption=[f"{s:.3f} · {name(labels[j])}" for s, j in zip(scores[0], nn[0])])

if ds.has_labels:
    queries = np.arange(len(bank))
    if len(bank) > MAX_PRECISION_QUERIES:
        queries = np.sort(np.random.default_rng(0).choice(len(bank), MAX_PRECISION_QUERIES, replace=False))
    with st.spinner(f"Retrieving the {k} neighbours of {len(queries):,} bank images…"):
        _, all_nn = retriever.query(bank[queries], exclude=queries)
    which = "every bank image as a query" if len(queries) == len(bank) else f"{len(queries):,} of the {len(bank):,} bank images as queries, drawn at random"
    st.subheader(f"Precision@{k} per class ({which})")
    q_labels = labels[queries]
    table = per_class_precision(labels[all_nn], q_labels, ds.class_names)
    st.plotly_chart(precision_bars(table, k), key="ret_bars")
    st.subheader("Worst queries: their neighbours disagree with their label")
    for _, row in worst_queries(labels[all_nn], q_labels, n=5).iterrows():
        r = int(row["query"])
        i = int(queries[r])
        st.image([big(ds.images[int(idx[i])], 64)] + [big(ds.images[int(idx[j])], 64) for j in all_nn[r][:10]],
                 caption=[f"query {name(int(row['label']))}"] + [name(labels[j]) for j in all_nn[r][:10]])
        st.caption(f"#{idx[i]}: P@{k} = {row['precision']:.2f}; most neighbours are {name(int(row['majority']))}")
