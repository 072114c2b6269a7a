"""Streamlit helpers shared by the pages (the only part of ssl_viz that imports streamlit)."""
