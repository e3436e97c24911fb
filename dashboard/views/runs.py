"""Runs: every run of the consortium, filterable, and a timeline of one run's attempts."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from dashboard import cached, charts, text, ui
from dashboard.config import DashboardConfig
from dashboard.data.queries import attempt_timeline, filter_runs, newest_started
from dashboard.navigation import page
from dashboard.tables import runs_table

FILTERS = (("partner", "Partner"), ("state", "State"), ("experiment", "Experiment"),
           ("site", "Site"))


def main() -> None:
    cfg = ui.config()
    st.title("Runs")
    ui.sources_caption(cfg)
    ui.live(_render, cfg)


def _render(cfg: DashboardConfig) -> None:
    runs = ui.from_store(lambda: cached.runs(cfg.store_url))
    if not len(runs):
        st.info("No runs yet. Launch one with `hpcfleet run launch FILE`.")
        return
    filters = {}
    for column, (key, label) in zip(st.columns(len(FILTERS)), FILTERS, strict=True):
        options = _options(runs, key)
        filters[key] = column.multiselect(label, options, key=f"runs_filter_{key}")
    shown = filter_runs(runs, **filters)
    st.caption(f"{len(shown):,} of {len(runs):,} runs")
    st.dataframe(runs_table(shown), hide_index=True)

    st.subheader("Timeline")
    if not len(shown):
        st.info("No run matches the filters.")
        return
    labels = {row.run_id: f"{row.name} · {row.run_id} · {row.state}"
              for row in shown.head(500).itertuples()}
    choices = list(labels)
    run_id = st.selectbox("Run", choices, index=newest_started(shown, choices),
                          format_func=labels.__getitem__, key="runs_timeline_run")
    st.page_link(page("run"), label=f"Open run {text.plain(run_id)} in detail",
                 icon=":material/open_in_new:", query_params={"run": run_id})
    jobs = ui.from_store(lambda: cached.jobs(cfg.store_url))
    timeline = attempt_timeline(jobs[jobs["run_id"] == run_id], datetime.now(UTC))
    if len(timeline):
        st.plotly_chart(charts.gantt_chart(timeline), key="runs_gantt")
    else:
        st.info("No job of this run has started yet.")


def _options(runs: pd.DataFrame, key: str) -> list[str]:
    if key == "site":
        return sorted({s for joined in runs["sites"] for s in joined.split(", ") if s})
    return sorted(set(runs[key]))


