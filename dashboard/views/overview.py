"""Overview: where the programme stands — milestones, and the consortium's totals."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from dashboard import cached, charts, text, ui
from dashboard.config import DashboardConfig
from dashboard.data.languages import EU_LANGUAGES
from dashboard.data.queries import consortium_totals
from dashboard.tables import recent_runs_table
from flows.milestones import MilestoneStatus

RECENT_RUNS = 8


def main() -> None:
    cfg = ui.config()
    st.title("Consortium overview")
    ui.sources_caption(cfg)
    ui.live(_render, cfg)


def _render(cfg: DashboardConfig) -> None:
    jobs = ui.from_store(lambda: cached.jobs(cfg.store_url))
    runs = ui.from_store(lambda: cached.runs(cfg.store_url))
    sites = ui.from_store(lambda: cached.sites(cfg.store_url))
    empty = pd.DataFrame(columns=["value_name"])
    _, results = ui.from_mlflow(lambda: cached.parent_runs(cfg.tracking_uri), (empty, empty))
    totals = consortium_totals(runs, jobs, results, sites)

    running = totals.runs_by_state.get("RUNNING", 0)
    columns = st.columns(4)
    columns[0].metric("Runs", f"{totals.runs:,}", f"{running} running" if running else None,
                      delta_color="off")
    columns[1].metric("GPU-hours used", text.gpu_hours(totals.gpu_hours))
    columns[2].metric("Languages covered", f"{len(totals.languages)} / {len(EU_LANGUAGES)}",
                      help="EU languages with at least one evaluation result in MLflow")
    columns[3].metric("Sites healthy", f"{totals.sites_healthy} / {totals.sites}",
                      help="Sites whose latest stored probe passed every check")

    st.subheader("Milestones")
    statuses, problem = ui.from_store(
        lambda: cached.milestones(cfg.store_url, cfg.tracking_uri, datetime.now(UTC).date())
    )
    if problem:
        st.warning(f"{text.plain(problem)} — metric criteria are shown as unmet.")
    if not statuses:
        st.info("No milestones yet. Add one with `hpcfleet milestone add FILE`.")
    for status in statuses:
        _milestone(status)

    left, right = st.columns(2)
    with left:
        st.subheader("Runs by partner")
        if len(runs):
            st.plotly_chart(charts.runs_by_partner_chart(runs), key="runs_by_partner")
        else:
            st.info("No runs yet.")
    with right:
        st.subheader("Recent runs")
        st.dataframe(recent_runs_table(runs.head(RECENT_RUNS)), hide_index=True)


def _milestone(status: MilestoneStatus) -> None:
    with st.container(border=True):
        head, due = st.columns([3, 1])
        head.markdown(f"**{text.plain(status.title)}** &nbsp; "
                      f"{text.MILESTONE_BADGES[status.state]}")
        due.markdown(f"due **{status.due:%Y-%m-%d}**  \n{text.days_left(status.days_left)}")
        met = sum(c.met for c in status.criteria)
        st.progress(min(max(status.progress, 0.0), 1.0),
                    text=f"{status.progress:.0%} · {met} of {len(status.criteria)} criteria met")
        with st.expander("Criteria"):
            for criterion in status.criteria:
                mark = "✅" if criterion.met else "⬜"
                st.markdown(f"{mark} {text.plain(criterion.description)} — "
                            f"{criterion.progress:.0%}")
                st.caption(text.plain(criterion.detail))
