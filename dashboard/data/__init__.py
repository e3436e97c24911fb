"""What the dashboard shows, as plain data: loaders over the Store and an MlflowClient,
and pure transforms into DataFrames and small frozen dataclasses.

Nothing here imports Streamlit (the cached wrappers are `dashboard.cached`, the pages
`dashboard.views`), so every function runs and is tested without an app.
"""
