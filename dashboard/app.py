"""LungReview dashboard entry point (placeholder until the dashboard issue lands)."""

import streamlit as st

from core.config import DISCLAIMER

st.set_page_config(page_title="LungReview", layout="wide")
st.title("LungReview")
st.warning(DISCLAIMER)
st.write("The review workflow is being built.")
