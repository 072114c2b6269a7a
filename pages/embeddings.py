"""Embeddings: the representation as a map tied to its images: hover a point to see it, click it for its nearest
neighbours, select a region for its class counts, place your own image, compare two encoders on one map."""

import streamlit as st

from ssl_viz.ui import explorer_panels as ex
from ssl_viz.ui.loaders import workspace_or_stop

st.title("Embeddings")
st.markdown("Each dot is one image placed by its embedding $z = f(x)$: **hover** a dot to see the image, **click** it for "
            "its nearest neighbours (cosine, in the embedding space, not on the map), **drag** a box to count the classes "
            "inside. Contrastive training pulls views of the same image together and spreads everything else over the "
            "sphere, so classes form clusters only as far as the augmentations preserved what separates them. Maps use "
            "unit vectors, where distance is a function of cosine similarity:")
st.latex(r"\|\hat z_i - \hat z_j\|^2 = 2 - 2\cos(z_i, z_j), \qquad \hat z = z / \|z\|")

ws, _, ds = workspace_or_stop()  # a model or dataset that cannot load: one error, the page stops
settings = ex.controls(ws, ds)
data, other = ex.load_or_stop(ws, settings)
focus, selected = ex.focus_and_selection(ws, data)
coords, coords_b, disparity, key = ex.project(ws, settings, data, other)
query_xy, query_nn = ex.query_panel(ws, settings, ds, data, coords, key)
neighbours = ex.focus_neighbours(settings, data, other, focus)  # per map: the focus's neighbours, ringed and shown as strips
ex.draw_maps(ws, settings, data, other, coords, coords_b, disparity, focus, neighbours, selected, query_xy)
ex.focus_panel(settings, data, other, focus, neighbours, query_nn)
ex.selection_panel(ws, settings, data, coords, selected)
ex.quality_metrics(ws, ds, data)
