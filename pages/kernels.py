"""Kernels: the convolution filters of one encoder, or two side by side."""

from pathlib import Path

import streamlit as st

from ssl_viz.analysis.kernels import (
    KernelError,
    conv_filters,
    filter_grid,
    filter_norms,
    filter_norms_figure,
    filter_statistics,
    first_layer_filters,
)
from ssl_viz.encoders import conv_layers
from ssl_viz.ui.loaders import get_model
from ssl_viz.ui.workspace import available_models, current_workspace

st.title("Kernels")
st.markdown(
    "A convolution slides each filter $W_o$ over the image and sums the products, so a first-layer filter *is* "
    "the small pattern it responds to. Trained networks learn oriented edges, colour blobs and textures in the "
    "first layer; an untrained or collapsed one shows noise. Deeper filters mix many input channels: look at them "
    "one input channel at a time, or averaged over channels. Red is a positive weight, blue a negative one."
)
st.latex(r"y_o(u, v) = \sum_{c} \sum_{i, j} W_{o, c, i, j}\; x_c(u + i,\, v + j)")

ws = current_workspace()
labels = {str(p): f"{label} · {card.get('method', '?')}/{card.get('encoder', '?')}" for label, p, card in available_models()}
others = [None] + [p for p in labels if p != ws.model]
# By default beside the workspace encoder: a first layer large enough to show what trained filters look like
REFERENCES = ("simclr-k7-photo-patches", "mobilenet_v2-imagenet")  # 16 colour 7x7 filters; ImageNet's 32 colour 3x3
default = next((others.index(p) for name in REFERENCES for p in others if p is not None and Path(p).name == name), 0)
second = st.selectbox("Compare with", others, index=default, format_func=lambda p: "— none —" if p is None else labels[p],
                      help="A second encoder shown side by side with the workspace encoder.", key="kern_second")
c1, c2, c3 = st.columns(3)
normalize = c1.radio("Scale", ["filter", "global"], horizontal=True,
                     help="filter: each filter min-max scaled (shapes); global: one scale (strengths comparable).", key="kern_scale")
size = c2.slider("Pixels per filter", 12, 96, 48, step=4, key="kern_size")
max_filters = c3.slider("Filters shown", 8, 256, 64, step=8, key="kern_max")

shown = [(ws.model, ws.encoder)] + ([(second, None)] if second else [])
norms = {}
for i, (col, (source, encoder_name)) in enumerate(zip(st.columns(len(shown)), shown)):
    with col:
        try:
            model = get_model(source, encoder_name)
        except Exception as exc:  # a bad checkpoint must not take the page down
            st.error(f"Cannot load {source}: {exc}")
            continue
        encoder = model.encoder
        st.subheader(model.name)
        st.caption(f"{model.card.get('method', '?')} · {encoder.name} · trained on {model.card.get('dataset', '?')}")
        first = first_layer_filters(encoder, normalize)[:max_filters]
        st.image(filter_grid(first, ncols=16, size=size),
                 caption=f"First layer: {len(first)} filters {first.shape[1]}×{first.shape[2]}, "
                         f"{encoder.first_conv().in_channels} input channel(s)")
        convs = conv_layers(encoder)
        layer = st.selectbox("Conv layer", list(convs), index=min(1, len(convs) - 1), key=f"kern_layer_{i}")
        per_filter = convs[layer].in_channels // convs[layer].groups
        channel = st.number_input(f"Input channel (0–{per_filter - 1}; −1 = mean over channels)", -1, per_filter - 1, -1,
                                  key=f"kern_channel_{i}")
        try:
            filters = conv_filters(encoder, layer, None if channel < 0 else int(channel), normalize)[:max_filters]
        except KernelError as exc:
            st.error(str(exc))
        else:
            st.image(filter_grid(filters, ncols=16, size=size),
                     caption=f"{layer}: {len(filters)} of {convs[layer].out_channels} filters, "
                             + ("mean over input channels" if channel < 0 else f"input channel {channel}"))
        with st.expander("Filter statistics per conv layer", expanded=i == 0):
            st.dataframe(filter_statistics(encoder), hide_index=True)
        norms[model.name if model.name not in norms else f"{model.name} ({i + 1})"] = filter_norms(encoder)

if norms:
    st.subheader("Filter norms by layer")
    st.caption("Weight decay shrinks unused filters: a layer with many near-zero norms has dead filters.")
    st.plotly_chart(filter_norms_figure(norms), width="stretch")
