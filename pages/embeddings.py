"""Embeddings: the representation as a map tied to its images: hover a point to see it, click it for its nearest
neighbours, select a region for its class counts, place your own image, compare two encoders on one map."""

import streamlit as st

from ssl_viz.ui.explorer_panels import (
                                        controls,
                                        draw_maps,
                                        focus_and_selection,
                                        focus_panel,
                                        load_or_stop,
                                        project,
                                        quality_metrics,
                                        query_panel,
                                        selection_panel,
)
from ssl_viz.ui.loaders import workspace_or_stop

st.title("Embeddings")
st.markdown("Each dot is one image placed by its embedding $z = f(x)$: **hover** a dot to see the image, **click** it for "
            "its nearest neighbours (cosine, in the embedding space, not on the map), **drag** a box to count the classes "
            "inside. Contrastive training pulls views of the same image together and spreads everything else over the "
            "sphere, so classes form clusters only as far as the augmentations preserved what separates them. Maps use "
            "unit vectors, where distance is a function of cosine similarity:")
st.latex(r"\|\hat z_i - \hat z_j\|^2 = 2 - 2\cos(z_i, z_j), \qquad \hat z = z / \|z\|")

ws, _, ds = workspace_or_stop()  # a model or dataset that cannot load: one error, the page stops
settings = controls(ws, ds)
data, other = load_or_stop(ws, settings)
focus, selected = focus_and_selection(ws, data)
coords, coords_b, disparity, key = project(ws, settings, data, other)
query_xy, query_nn = query_panel(ws, settings, ds, data, coords, key)
draw_maps(ws, settings, data, other, coords, coords_b, disparity, focus, selected, query_xy)
focus_panel(settings, data, other, focus, query_nn)
selection_panel(ws, settings, data, coords, selected)
quality_metrics(ws, ds, data)
