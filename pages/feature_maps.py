"""Feature maps: what each channel of a layer responds to in one image, and which images excite it most."""

import streamlit as st

from ssl_viz.analysis.feature_maps import (
    FeatureMapError,
    activation_grid,
    capture_feature_maps,
    channel_order,
    layer_choices,
    load_image,
    stage_layers,
    top_channel_images,
)
from ssl_viz.analysis.images import make_grid, to_hwc_uint8, upscale
from ssl_viz.cache import fingerprint
from ssl_viz.ui.links import range_or_default
from ssl_viz.ui.loaders import channel_scores, workspace_or_stop

SAMPLE = 500

st.title("Feature maps")
st.markdown(
    "Each channel of a layer is a detector: its map $A^{\\ell}_k$ lights up where its pattern occurs. Early layers "
    "respond to edges and blobs at every position; deeper layers are coarser and respond to parts and shapes. "
    "The images of the dataset that excite a channel most (highest mean activation) show what it has learned."
)
st.latex(r"A^{\ell} = \mathrm{ReLU}\big(\mathrm{BN}(W^{\ell} * A^{\ell-1})\big), \qquad "
         r"s_k(x) = \tfrac{1}{HW}\textstyle\sum_{u,v} A^{\ell}_k(x)_{u,v}")


ws, model, ds = workspace_or_stop()
encoder = model.encoder

left, right = st.columns([1, 3])
with left:
    source = st.radio("Image", ["Dataset image", "Upload an image"], key="fm_source", horizontal=True)
    if source == "Dataset image":
        range_or_default("fm_index", 0, len(ds) - 1)  # a link made for a larger dataset
        index = st.slider("Test image", 0, len(ds) - 1, 0, key="fm_index")
        x, caption = ds.float_images(slice(index, index + 1)), f"#{index} · {ds.class_names[ds.labels[index]] if ds.has_labels else ''}"
    else:
        upload = st.file_uploader("An image (converted to the dataset's channels and size)", type=["png", "jpg", "jpeg", "bmp", "webp"])
        if upload is None:
            st.info("Upload an image to see its feature maps.")
            st.stop()
        try:
            x, caption = load_image(upload, ds.channels, ds.image_size), upload.name
        except FeatureMapError as exc:
            st.error(f"{upload.name}: {exc}")
            st.stop()
    st.image(upscale(to_hwc_uint8(x[0]), 192), caption=caption)
    layers, stages = layer_choices(encoder), {v: k for k, v in stage_layers(encoder).items()}
    layer = st.selectbox("Layer", layers, index=min(1, len(layers) - 1), key="fm_layer",
                         format_func=lambda n: f"stage {stages[n]}" if n in stages else f"conv {n}")
    sort_by = st.radio("Order channels by", ["mean", "max", "index"], horizontal=True, key="fm_sort")
    max_channels = st.slider("Channels shown", 8, 128, 32, step=8, key="fm_max")

fmap = capture_feature_maps(encoder, x, [layer])[layer][0]  # [C, H, W]
grid, order = activation_grid(fmap, max_channels, sort_by, ncols=8, size=64)
with right:
    st.image(grid, caption=f"{layer}: {len(order)} of {fmap.shape[0]} channels, {fmap.shape[1]}×{fmap.shape[2]} each, "
                           f"by {sort_by} activation (each channel min-max scaled, inferno colours)")

st.subheader("Which images excite a channel most")
means = fmap.flatten(1).mean(1)
channel = st.selectbox("Channel (most active on this image first)", [int(c) for c in channel_order(fmap, "mean")], key="fm_channel",
                       format_func=lambda c: f"channel {c} · mean activation {float(means[c]):.3f}")
scores, idx = channel_scores(ws.model, ws.encoder, ws.dataset, layer, SAMPLE, fingerprint(ws.model))
top, top_scores = top_channel_images(scores, channel, k=16)
images = [to_hwc_uint8(ds.images[i]) for i in idx[top]]
st.image(make_grid(images, ncols=8, pad=2, upscale=max(1, 72 // ds.image_size[0])),
         caption=f"Top 16 of {len(idx)} test images for channel {channel} of {layer}; "
                 f"mean activation {top_scores[0]:.3f} … {top_scores[-1]:.3f}")
