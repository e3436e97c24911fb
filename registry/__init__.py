"""The registry: documents (pydantic models), their persistence and the access rules.

It knows nothing of SSH, schedulers, Prefect or Streamlit.
"""
