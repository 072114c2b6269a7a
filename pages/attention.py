"""Attention: which pixels an encoder relies on, self-supervised next to supervised."""

import streamlit as st

from ssl_viz.analysis.attribution import TARGETS, AttributionError, default_gradcam_layer, explain_image
from ssl_viz.analysis.images import normalize_map, overlay, to_hwc_uint8, upscale
from ssl_viz.augment import POLICIES
from ssl_viz.encoders import conv_layers
from ssl_viz.ui.loaders import get_model, workspace_or_stop
from ssl_viz.ui.workspace import comparison_models, parse_indices

METHOD_NAMES = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated Gradients", "saliency": "Saliency", "occlusion": "Occlusion"}

st.title("Attention")
st.markdown(
    "An SSL encoder has no class to explain, so we explain a **similarity**: how much each pixel makes $f(x)$ close "
    "to a reference embedding $r$ (the image's own augmented view, another image, or a class prototype). A "
    "supervised model alongside shows whether labels make the network look at other pixels. Grad-CAM weights a "
    "conv layer's maps $A^k$ by their pooled gradients; ViTs also show their real [CLS] attention and its rollout."
)
st.latex(r"y = \cos\big(f(x), r\big), \qquad L_{\text{Grad-CAM}} = \mathrm{ReLU}\Big(\sum_k \alpha_k A^k\Big),"
         r"\quad \alpha_k = \frac{1}{Z}\sum_{u,v} \frac{\partial y}{\partial A^k_{uv}}")

ws, model, ds = workspace_or_stop()
options, names, n_supervised = comparison_models(ws.model, model.encoder.name)

c1, c2, c3, c4 = st.columns(4)
text = c1.text_input("Test images (indices)", "0, 1, 2, 3", key="att_indices")
kind = c2.selectbox("Target", list(TARGETS), format_func=TARGETS.get, key="att_target")
method = c3.selectbox("Method", list(METHOD_NAMES), format_func=METHOD_NAMES.get, key="att_method")
second = c4.selectbox("Compare with", options, index=1 if n_supervised else 0, key="att_second",
                      format_func=lambda p: "— none —" if p is None else names[p])
indices = parse_indices(text, len(ds))
if indices is None:
    st.error(f"Give one or more image indices between 0 and {len(ds) - 1}, separated by commas.")
    st.stop()

kw = {}
if kind == "view":
    kw["policy"] = st.selectbox("Augmentation of the view", list(POLICIES), index=list(POLICIES).index("simclr"), key="att_policy")
    kw["seed"] = st.number_input("Seed of the view", 0, 10_000, 0, key="att_seed")
elif kind == "image":
    other = st.number_input("Reference image index", 0, len(ds) - 1, min(10, len(ds) - 1), key="att_reference")
    kw["reference"] = ds.float_images(slice(other, other + 1))
elif kind == "prototype":
    if not ds.has_labels:
        st.error(f"{ws.dataset} has no labels, so it has no class prototypes: pick another target.")
        st.stop()
    proto = st.selectbox("Class", range(ds.num_classes), format_func=lambda c: ds.class_names[c], key="att_class")
    kw["reference"] = ds.float_images(ds.labels == proto)[:256]
if method == "gradcam":
    layers = list(conv_layers(model.encoder))
    default = default_gradcam_layer(model.encoder, ds.float_images(slice(indices[0], indices[0] + 1)))
    layer_name = st.selectbox("Grad-CAM layer (workspace encoder; the other uses its own default)", layers, index=layers.index(default))
elif method == "integrated_gradients":
    kw["n_steps"] = st.slider("Integration steps", 4, 64, 16, step=4, key="att_steps")

shown = [(model, ws.representation)]
try:
    shown += [(get_model(second), "backbone")] if second else []
except Exception as exc:  # a bad checkpoint must not take the page down
    st.error(f"Cannot load {second}: {exc}")
for column, (m, rep) in zip(st.columns(len(shown)), shown):
    column.subheader(m.name)
    column.caption(f"{m.card.get('method', '?')} · {m.encoder.name} · {'class logit' if kind == 'logit' else rep}")
    with st.spinner(f"Attributing with {m.name}…"):
        for i in indices:
            x = ds.float_images(slice(i, i + 1))
            try:
                e = explain_image(m, x, kind, method, representation=rep, label=int(ds.labels[i]), num_classes=ds.num_classes,
                                  layer_name=layer_name if method == "gradcam" and m is model else None, **kw)
            except (AttributionError, ValueError) as exc:
                column.info(str(exc))
                break
            image = upscale(to_hwc_uint8(x[0]), 128)
            images = [image] + [overlay(image, normalize_map(a)) for a in e.maps.values()]
            label = f" · {ds.class_names[ds.labels[i]]}" if ds.has_labels else ""
            cls = f" (class {e.class_index})" if e.class_index is not None else ""
            captions = [f"#{i}{label} · y = {e.score:.3f}{cls}"] + [METHOD_NAMES.get(t, t) for t in e.maps]
            for start in range(0, len(images), 4):  # one row per image (ViT attention maps continue below)
                column.image(images[start:start + 4], caption=captions[start:start + 4], width=112)
