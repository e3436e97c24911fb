"""Streamlit dashboard (read-only: store + MLflow)."""
