"""ssl-viz: see what contrastive self-supervised learning does to images.

Entry point: shared sidebar (workspace) + navigation between the pages.
"""

import streamlit as st

from ssl_viz.ui.sidebar import render_sidebar

st.set_page_config(page_title="ssl-viz", page_icon="🔭", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Overview", icon="🏠", default=True),
    st.Page("pages/pairs.py", title="Pairs & negatives", icon="🔀"),
    st.Page("pages/kernels.py", title="Kernels", icon="🧩"),
    st.Page("pages/feature_maps.py", title="Feature maps", icon="🗺️"),
    st.Page("pages/attention.py", title="Attention", icon="🎯"),
    st.Page("pages/embeddings.py", title="Embeddings", icon="🌌"),
    st.Page("pages/retrieval.py", title="Retrieval", icon="🔎"),
]

page = st.navigation(PAGES)
render_sidebar()
page.run()
