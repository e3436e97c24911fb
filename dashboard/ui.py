"""Streamlit helpers every page shares: configuration, failing soft, live refresh."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from dashboard.config import DashboardConfig, load_config
from dashboard.data.queries import MlflowUnavailable
from dashboard.text import code, plain, safe_url
from registry.errors import HpcfleetError

T = TypeVar("T")


def config() -> DashboardConfig:
    return load_config()


def from_store(load: Callable[[], T]) -> T:
    """Data from the registry; without it a page has nothing to show, so it stops."""
    try:
        return load()
    except HpcfleetError as exc:
        st.error(f"Cannot read the registry at {code(safe_url(config().store_url))}: "
                 f"{plain(exc)}")
        st.stop()


def from_mlflow(load: Callable[[], T], fallback: T) -> T:
    """Data from MLflow; without it the page still shows what the registry knows."""
    try:
        return load()
    except MlflowUnavailable as exc:
        st.warning(f"{plain(exc)} — showing what the registry alone knows.")
        return fallback


def live(render: Callable[..., None], cfg: DashboardConfig, *args: object) -> None:
    """Render `render(cfg, *args)` as a fragment that refreshes itself every few seconds."""
    st.fragment(render, run_every=cfg.refresh_seconds)(cfg, *args)


def sources_caption(cfg: DashboardConfig) -> None:
    st.caption(f"Registry {code(safe_url(cfg.store_url))} · "
               f"MLflow {code(safe_url(cfg.tracking_uri))} · "
               f"refreshes every {cfg.refresh_seconds:g} s")


MAX_RUN_CHOICES = 1000


def pick_run(cfg: DashboardConfig, key: str, *, with_state: bool = False) -> str | None:
    """The run a run page shows: `?run=ID` (so that it can be linked to and shared), or
    chosen here among the newest runs; by default the newest that has started. None when
    there are no runs (the page says so)."""
    from dashboard import cached
    from dashboard.data.queries import newest_started

    runs = from_store(lambda: cached.runs(cfg.store_url))
    if not len(runs):
        st.info("No runs yet. Launch one with `hpcfleet run launch FILE`.")
        return None
    choices = list(runs["run_id"].head(MAX_RUN_CHOICES))
    linked = st.query_params.get("run")
    if linked and linked not in choices and linked in set(runs["run_id"]):
        choices.insert(0, linked)  # an old run, linked to from elsewhere
    shown = runs["name"] + " · " + runs["run_id"]
    if with_state:
        shown = shown + " · " + runs["state"]
    labels = dict(zip(runs["run_id"], shown, strict=True))
    index = choices.index(linked) if linked in choices else newest_started(runs, choices)
    # Synced by hand, not with bind="query-params": that would put the label in the URL.
    run_id: str | None = st.selectbox(
        "Run", choices, index=index, format_func=labels.__getitem__, key=key
    )
    if run_id is not None:
        st.query_params["run"] = run_id
    return run_id
