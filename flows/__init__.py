"""Cross-site runs: plain functions that walk a run's stage DAG, with a thin Prefect
flow (`flows.cross_site`) on top. Importing this package imports neither Prefect nor
MLflow."""
