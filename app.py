"""ssl-viz: see what contrastive self-supervised learning does to images.

Entry point: the optional password (SSL_VIZ_PASSWORD), shared sidebar (workspace) + navigation between the pages;
the workspace and the page's settings are kept in the URL (ssl_viz.ui.links), so a link reproduces the view.
"""

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from ssl_viz.ui.access import confine_dataset_reads, is_locked, require_password
from ssl_viz.ui.links import restore_from_url, run_page
from ssl_viz.ui.sidebar import render_sidebar

PagesManager.uses_pages_directory = False  # every rerun goes through this file (and its password form), as ssl_viz.ui.serve sets
st.set_page_config(page_title="ssl-viz", page_icon=":material/visibility:", layout="wide")
confine_dataset_reads()  # files of folder datasets are opened under the data roots only (ssl_viz.safety)

PAGES = [
    st.Page("pages/home.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/pairs.py", title="Pairs & negatives", icon=":material/compare_arrows:"),
    st.Page("pages/kernels.py", title="Kernels", icon=":material/grid_view:"),
    st.Page("pages/feature_maps.py", title="Feature maps", icon=":material/layers:"),
    st.Page("pages/attention.py", title="Attention", icon=":material/center_focus_strong:"),
    st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("pages/retrieval.py", title="Retrieval", icon=":material/image_search:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/runs.py", title="Runs & compare", icon=":material/monitoring:"),
    st.Page("pages/diagnose.py", title="Diagnose augmentations", icon=":material/stethoscope:"),
    st.Page("pages/negatives.py", title="Negatives & bias", icon=":material/do_not_disturb_on:"),
]

page = st.navigation(PAGES, position="hidden" if is_locked() else "sidebar")
require_password()  # with SSL_VIZ_PASSWORD set: a form, and st.stop() until it is given; no page runs before
restore_from_url()  # once per browser session: a shared link's workspace and page settings (st.query_params)
render_sidebar()
run_page(page)  # page.run(), with st.query_params kept in step with the workspace and this page's settings
