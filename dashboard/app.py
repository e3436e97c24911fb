"""The consortium dashboard: `streamlit run dashboard/app.py` (or `hpcfleet dashboard`).

Reads the registry store and MLflow configured as for the CLI (dashboard.config); it
never opens a connection to a site.
"""

from __future__ import annotations

import streamlit as st

from dashboard.navigation import all_pages

st.set_page_config(page_title="hpcfleet", page_icon=":material/hub:", layout="wide")
st.navigation(all_pages()).run()
