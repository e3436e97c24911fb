"""Evaluations: one run's checkpoints × languages, how much of its matrix has results,
and when its checkpoints appeared.

The run comes from `?run=ID` (shareable), or is chosen here. The heatmap shows the
latest attempt of each cell for one stage, metric and value of every other key (task,
n_shot, ...); a planned cell without a result is a grey gap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import cached, charts, text, ui
from dashboard.config import DashboardConfig
from dashboard.data.evaluations import (
    Evaluation,
    checkpoint_language_matrix,
    checkpoint_timeline,
    heatmap_stages,
    latest_results,
    picker_keys,
    picker_values,
)


def main() -> None:
    cfg = ui.config()
    st.title("Evaluations")
    run_id = ui.pick_run(cfg, "evaluations_run")
    if run_id is not None:
        ui.live(_render, cfg, run_id)


def _render(cfg: DashboardConfig, run_id: str) -> None:
    evaluation = ui.from_store(lambda: cached.evaluation(cfg.store_url, run_id))
    if not evaluation.cells:
        st.info("This run has no evaluation matrix: a stage with "
                "`array: {language: [...], task: [...], n_shot: [...]}` has one.")
    else:
        _coverage(evaluation)
        _heatmap(evaluation)
    timeline_section(evaluation.checkpoints, evaluation.results)


def _coverage(evaluation: Evaluation) -> None:
    st.subheader("Coverage")
    coverage = evaluation.coverage
    for stage, summary in coverage.groupby("stage", sort=False)["summary"].first().items():
        st.markdown(f"**{text.plain(stage)}** — {text.plain(summary)}")
    st.plotly_chart(charts.coverage_chart(coverage), key="evaluations_coverage")


def _heatmap(evaluation: Evaluation) -> None:
    st.subheader("Checkpoint × language")
    latest = latest_results(evaluation.results)
    stages = heatmap_stages(evaluation.cells, latest)
    if not stages:
        st.info("No stage of this run evaluates per language (a `language` array key).")
        return
    stage_results = latest[latest["stage"].isin(stages)]
    first = st.columns(2)
    stage = first[0].selectbox("Stage", stages, key="evaluations_stage")
    stage_results = stage_results[stage_results["stage"] == stage]
    metrics = sorted(set(stage_results["metric"]))
    if not metrics:
        st.info(f"No results of {text.code(stage)} yet.")
        return
    metric = first[1].selectbox("Metric", metrics, key="evaluations_metric")
    cells = evaluation.cells.get(stage, [])
    fixed = _pickers(picker_keys(cells, stage_results), cells, stage_results, stage)
    matrix = checkpoint_language_matrix(latest, cells, stage, metric, fixed)
    gaps = int(matrix.isna().to_numpy().sum())
    st.plotly_chart(charts.language_heatmap(matrix, metric), key="evaluations_heatmap")
    st.caption(f"{matrix.shape[1]} checkpoint(s) × {matrix.shape[0]} language(s) of "
               f"{text.code(metric)}, latest attempt of each cell · {gaps} planned cell(s) "
               "without a result shown in grey")


def _pickers(keys: Sequence[str], cells: Sequence[Mapping[str, str]],
             stage_results: pd.DataFrame, stage: str) -> dict[str, str]:
    """One picker per key besides the language; their choices fix the heatmap's cells."""
    fixed: dict[str, str] = {}
    for column, key in zip(st.columns(max(len(keys), 1)), keys, strict=False):
        values = picker_values(key, cells, stage_results)
        chosen = column.selectbox(text.plain(key), values, key=f"evaluations_{stage}_{key}")
        if chosen is not None:
            fixed[key] = chosen
    return fixed


def timeline_section(
    checkpoints: Sequence[Mapping[str, Any]], results: pd.DataFrame | None = None
) -> None:
    """The checkpoint timeline of the run's training stages (checkpoint records as plain
    dicts, see `checkpoint_timeline`); nothing at all without checkpoints."""
    if not checkpoints:
        return
    timeline = checkpoint_timeline(checkpoints, results)
    st.subheader("Checkpoints")
    st.plotly_chart(charts.checkpoint_timeline_chart(timeline), key="evaluations_timeline")
    st.dataframe(timeline, hide_index=True)
