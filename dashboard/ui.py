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
