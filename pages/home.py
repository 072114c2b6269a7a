"""Overview: what ssl-viz shows, the current workspace, and where to go next."""

import streamlit as st

from ssl_viz.data import DatasetError, display_title
from ssl_viz.ui.loaders import get_dataset, get_model, view_split
from ssl_viz.ui.workspace import available_models, current_workspace

st.title("ssl-viz · what contrastive learning does to images")
st.markdown(
    "Contrastive self-supervised learning trains an encoder $f$ to map two augmented views of the same image "
    "close together and views of other images apart, with no labels. The augmentations decide **what the "
    "representation ignores**: a crop-and-colour policy teaches invariance to position and colour, which is "
    "right for clothing and wrong where colour defines the class. Pick an encoder and a dataset in the sidebar, "
    "then open a view."
)
st.latex(r"\ell_i = -\log \frac{\exp(\mathrm{sim}(z_i, z_{j(i)})/\tau)}{\sum_{k \neq i} \exp(\mathrm{sim}(z_i, z_k)/\tau)}"
         r"\qquad \text{(InfoNCE / NT-Xent, SimCLR eq. 1)}")

ws = current_workspace()
left, right = st.columns(2)
with left:
    st.subheader("Encoder")
    try:
        model = get_model(ws.model, ws.encoder)
        card = model.card
        st.markdown(f"**{model.name}** — `{card.get('method', '?')}` on `{card.get('encoder', '?')}`, trained on `{card.get('dataset', '?')}`")
        metrics = {k: v for k, v in (card.get("metrics") or {}).items() if isinstance(v, (int, float))}
        if metrics:
            cols = st.columns(len(metrics))
            for col, (name, value) in zip(cols, metrics.items()):
                col.metric(name, f"{value:.3f}")
    except Exception as exc:  # a bad model must not take the page down
        st.error(f"The selected encoder cannot be loaded: {exc}")
with right:
    st.subheader("Dataset")
    try:
        ds = get_dataset(ws.dataset, view_split(ws.dataset), ws.label)
        st.markdown(f"**{display_title(ws.dataset)}** — {len(ds)} {'' if ds.split == 'all' else 'test '}images, {ds.image_size[0]}×{ds.image_size[1]} px, "
                    f"{ds.channels} channel(s), {ds.num_classes} classes" + (f"; factors: {', '.join(ds.factors)}" if ds.factors else ""))
    except DatasetError as exc:
        st.error(str(exc))

st.subheader("Views")
views = {
    "Pairs & negatives": "augmented positive pairs, the negatives of a batch, the similarity matrix and each anchor's softmax",
    "Kernels": "first-layer and deeper convolution filters, side by side for two encoders",
    "Feature maps": "activations of any layer, and the images that excite a channel most",
    "Attention": "Grad-CAM, Integrated Gradients, saliency, occlusion; true attention for ViTs; supervised vs self-supervised",
    "Embeddings": "UMAP, t-SNE and PCA of the representation, coloured by label, factor or cluster",
    "Retrieval": "top-K nearest neighbours, precision@K and the worst queries",
}
st.table({"view": list(views), "what it shows": list(views.values())})
st.caption(f"{len(available_models())} models available (shipped in models/ and your runs).")
