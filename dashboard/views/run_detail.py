"""Run detail: one run's stages and jobs, log tails, metric charts, links out.

The run comes from the `?run=ID` query parameter (so the page can be linked to and
shared), or is chosen here; by default the newest run that has started.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from dashboard import cached, charts, text, ui
from dashboard.config import DashboardConfig
from dashboard.data.queries import attempt_timeline
from dashboard.data.run_queries import RunDetail, mlflow_run_url, prefect_flow_run_url
from dashboard.tables import jobs_table, stages_table


def main() -> None:
    cfg = ui.config()
    st.title("Run detail")
    run_id = ui.pick_run(cfg, "run_detail_run", with_state=True)
    if run_id is not None:
        ui.live(_render, cfg, run_id)


def _render(cfg: DashboardConfig, run_id: str) -> None:
    detail = ui.from_store(lambda: cached.run_detail(cfg.store_url, cfg.tracking_uri, run_id))
    if detail.mlflow_error:
        st.warning(f"{text.plain(detail.mlflow_error)} — metrics and logs are unavailable.")
    _header(detail, cfg)
    st.subheader("Stages")
    st.dataframe(stages_table(detail.stages), hide_index=True)
    timeline = attempt_timeline(detail.jobs, datetime.now(UTC))
    if len(timeline):
        st.plotly_chart(charts.gantt_chart(timeline), key="detail_gantt")
    st.subheader("Jobs")
    if len(detail.jobs):
        st.dataframe(jobs_table(detail.jobs), hide_index=True)
    else:
        st.info("No job submitted yet.")
    _metrics(detail, cfg)
    _logs(detail, cfg)


def _header(detail: RunDetail, cfg: DashboardConfig) -> None:
    run = detail.run
    st.markdown(f"### {text.plain(run.name)} {text.code(run.run_id)} — "
                f"{text.state(run.state.value)}")
    duration = (run.ended - run.started).total_seconds() if run.started and run.ended else None
    gpu_hours = float(detail.jobs["gpu_hours"].sum()) if len(detail.jobs) else 0.0
    facts = [
        f"**Partner** {text.plain(run.partner)}", f"**Experiment** {text.plain(run.experiment)}",
        f"**Created** {text.when(run.created)}", f"**Started** {text.when(run.started)}",
        f"**Ended** {text.when(run.ended) if run.ended else '-'}",
        f"**Duration** {text.duration(duration)}",
        f"**GPU-hours** {text.gpu_hours(gpu_hours)}",
    ]
    st.markdown(" · ".join(facts))
    if run.reason and run.state.value == "FAILED":
        st.error(text.plain(run.reason))
    elif run.reason:
        st.info(text.plain(run.reason))
    links = st.columns(4)
    if run.mlflow_run_id and detail.experiment_id:
        links[0].link_button("MLflow run", mlflow_run_url(
            cfg.mlflow_ui_url, detail.experiment_id, run.mlflow_run_id), icon=":material/science:")
    if run.prefect_flow_run_id:
        links[1].link_button("Prefect flow run", prefect_flow_run_url(
            cfg.prefect_ui_url, run.prefect_flow_run_id), icon=":material/account_tree:")


def _metrics(detail: RunDetail, cfg: DashboardConfig) -> None:
    results = detail.array_results
    history = pd.DataFrame(columns=["run", "key", "step", "value"])
    if len(detail.children):
        history = ui.from_mlflow(lambda: cached.metric_histories(
            cfg.tracking_uri, detail.run.run_id, detail.children), history)
    if not len(results) and not len(history):
        return
    st.subheader("Metrics")
    if len(results):
        metrics = sorted(set(results["metric"]))
        metric = st.selectbox("Result per array value", metrics, key="detail_array_metric")
        st.plotly_chart(charts.array_results_chart(results, metric), key="detail_array_chart")
    keys = sorted(set(history["key"]))
    for column, key in zip(st.columns(min(len(keys), 3) or 1), keys, strict=False):
        with column:
            st.plotly_chart(charts.metric_history_chart(history, key), key=f"history_{key}")


def _logs(detail: RunDetail, cfg: DashboardConfig) -> None:
    children = detail.children
    if not len(children):
        return
    st.subheader("Log tails")
    failed_first = children.assign(ok=children["state"] == "COMPLETED").sort_values(
        ["ok", "start"], kind="stable")
    labels = {row.mlflow_run_id: f"{row.name} @ {row.site} · {row.state}"
              for row in failed_first.itertuples()}
    chosen = st.selectbox("Job", list(labels), format_func=labels.__getitem__,
                          key="detail_log_job")
    no_tails: dict[str, str] = {}
    tails = ui.from_mlflow(lambda: cached.log_tails(cfg.tracking_uri, chosen), no_tails)
    if not tails:
        st.caption("No logs were collected for this job.")
    for name, tail in tails.items():
        st.caption(text.plain(name))
        st.code(tail or "(empty)", language=None)
