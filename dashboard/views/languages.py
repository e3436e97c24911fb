"""Languages: how the models do in each of the 24 EU languages, run by run.

A heatmap of language × run for one metric of one experiment; the languages always in
the same order, and a missing result is a visible grey gap, not a hidden row.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import cached, charts, text, ui
from dashboard.data.languages import EU_LANGUAGES
from dashboard.data.queries import array_metrics, language_matrix
from dashboard.tables import coverage_table

DEFAULT_RUNS_SHOWN = 20
TABLE_HEIGHT = 35 * (len(EU_LANGUAGES) + 1) + 3  # every language row, no inner scrolling


def main() -> None:
    cfg = ui.config()
    st.title("Languages")
    ui.sources_caption(cfg)
    empty = pd.DataFrame(columns=["experiment", "metric", "value_name", "label", "start",
                                  "value"])
    _, results = ui.from_mlflow(lambda: cached.parent_runs(cfg.tracking_uri), (empty, empty))
    eu_results = results[results["value_name"].isin(EU_LANGUAGES)]
    if not len(eu_results):
        st.info("No per-language results yet: an evaluation stage with "
                "`array: {language: [...]}` logs them to MLflow as `<metric>/<language>`.")
        st.dataframe(coverage_table(pd.DataFrame(index=list(EU_LANGUAGES))), hide_index=True,
                     height=TABLE_HEIGHT)
        return
    experiments = list(eu_results.groupby("experiment")["start"].max()
                       .sort_values(ascending=False).index)
    left, middle, right = st.columns(3)
    experiment = left.selectbox("Experiment", experiments, key="languages_experiment")
    metrics = array_metrics(results, experiment)
    metric = middle.selectbox("Metric", metrics, key="languages_metric")
    labels = eu_results[(eu_results["experiment"] == experiment)
                        & (eu_results["metric"] == metric)]["label"].nunique()
    shown = right.number_input("Runs shown (newest)", min_value=1, max_value=max(labels, 1),
                               value=min(DEFAULT_RUNS_SHOWN, max(labels, 1)),
                               key="languages_runs")
    matrix = language_matrix(results, experiment, metric, last=int(shown))
    gaps = int(matrix.isna().to_numpy().sum())
    st.plotly_chart(charts.language_heatmap(matrix, metric), key="languages_heatmap")
    st.caption(f"{matrix.shape[1]} of {labels} runs with {text.code(metric)} results · "
               f"{gaps} gap(s) shown in grey (no result for that language in that run)")
    st.subheader("Per language")
    st.dataframe(coverage_table(matrix), hide_index=True, height=TABLE_HEIGHT)


