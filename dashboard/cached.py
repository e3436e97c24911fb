"""Streamlit caches over `dashboard.data.queries`: connections once per process, data for a
short ttl so that live pages stay current without hammering the store or MLflow.

Every function takes the store URL / tracking URI it reads, so two configurations never
share a cache entry.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from dashboard.data import evaluations, queries, run_queries
from dashboard.data import sites as site_data
from dashboard.data.parent_index import ParentRunIndex
from flows.milestones import MilestoneStatus
from registry.store import Store

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

TTL_SECONDS = 15


@st.cache_resource(show_spinner=False)
def store(url: str) -> Store:
    return Store.open(url)


@st.cache_resource(show_spinner=False)
def mlflow_client(tracking_uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def jobs(store_url: str) -> pd.DataFrame:
    return queries.load_jobs(store(store_url))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def runs(store_url: str) -> pd.DataFrame:
    return queries.load_runs(store(store_url), jobs(store_url))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def sites(store_url: str) -> list[site_data.SiteView]:
    return site_data.load_sites(store(store_url), jobs(store_url), datetime.now(UTC))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def evaluation(store_url: str, run_id: str) -> evaluations.Evaluation:
    return evaluations.load_evaluation(store(store_url), run_id)


@st.cache_resource(show_spinner=False)
def parent_index(tracking_uri: str) -> ParentRunIndex:
    return ParentRunIndex()


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def parent_runs(tracking_uri: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(parents, results); raises MlflowUnavailable (not cached) when MLflow is down."""
    runs, experiments = parent_index(tracking_uri).sync(mlflow_client(tracking_uri))
    return queries.parents_and_results(runs, experiments)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def milestones(
    store_url: str, tracking_uri: str, today: date
) -> tuple[list[MilestoneStatus], str | None]:
    """(statuses, why metric criteria could not be checked, if MLflow failed)."""
    return queries.load_milestones(store(store_url), mlflow_client(tracking_uri), today,
                                   runs(store_url))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def run_detail(store_url: str, tracking_uri: str, run_id: str) -> run_queries.RunDetail:
    return run_queries.load_run_detail(store(store_url), mlflow_client(tracking_uri), run_id)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def metric_histories(tracking_uri: str, run_id: str, _children: pd.DataFrame) -> pd.DataFrame:
    """Keyed by the run (the children frame, leading underscore, is not hashed)."""
    return run_queries.load_metric_histories(mlflow_client(tracking_uri), _children)


@st.cache_data(ttl=60, show_spinner=False)
def log_tails(tracking_uri: str, mlflow_run_id: str) -> dict[str, str]:
    return run_queries.load_log_tails(mlflow_client(tracking_uri), mlflow_run_id)
