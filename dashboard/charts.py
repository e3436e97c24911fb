"""Plotly figures of the dashboard. Pure: data in, figure out.

Plotly renders a few HTML tags (links among them) in every label, so names that users
chose (sites, stages, runs, partners, metrics) go in through `text.chart_text`.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from dashboard.data.languages import EU_LANGUAGES, language_label
from dashboard.data.sites import AllocationView
from dashboard.text import chart_text

STATE_COLORS = {
    "COMPLETED": "#2e7d32", "RUNNING": "#1565c0", "PENDING": "#9e9e9e",
    "FAILED": "#c62828", "CANCELLED": "#6d4c41",
}
GAP_COLOR = "#e6e6e6"  # heatmap cells without a result show the background


def _escaped(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """`frame` with the named text columns made safe for plotly labels."""
    return frame.assign(**{c: frame[c].map(chart_text) for c in columns})


def _compact(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def burn_chart(allocation: AllocationView) -> go.Figure:
    """Cumulative GPU-hours used, the linear forecast to the period's end, the grant."""
    f = allocation.forecast
    usage = allocation.usage
    now = min(max(f.as_of, f.start), f.end)
    x = [*usage["time"], now]
    y = [*usage["used"], f.used]
    fig = go.Figure()
    fig.add_scatter(x=x, y=y, mode="lines", line_shape="hv", name="used",
                    line={"color": "#1565c0", "width": 3})
    if f.status in ("on pace", "over", "under"):
        color = "#c62828" if f.status == "over" else "#f9a825"
        fig.add_scatter(x=[now, f.end], y=[f.used, f.projected], mode="lines",
                        name=f"forecast ({f.projected:,.0f} h)",
                        line={"color": color, "dash": "dash"})
    fig.add_scatter(x=[f.start, f.end], y=[f.granted, f.granted], mode="lines",
                    name=f"granted ({f.granted:,.0f} h)", line={"color": "#616161", "dash": "dot"})
    fig.update_xaxes(range=[f.start, f.end])
    fig.update_yaxes(title="GPU-hours", rangemode="tozero")
    return _compact(fig, 260)


def gantt_chart(timeline: pd.DataFrame) -> go.Figure:
    """Stage attempts of one run as bars on a time axis, one lane per site."""
    fig = px.timeline(
        _escaped(timeline, "site", "stage", "label"), x_start="start", x_end="end", y="site",
        color="stage", text="label",
        pattern_shape="state",
        pattern_shape_map={"COMPLETED": "", "RUNNING": "/", "PENDING": ".", "FAILED": "x",
                           "CANCELLED": "-", "TIMEOUT": "x", "PREEMPTED": "x",
                           "NODE_FAIL": "x", "OUT_OF_MEMORY": "x"},
        hover_data={"attempt": True, "state": True, "tasks": True},
    )
    fig.update_traces(textposition="inside", insidetextanchor="middle")
    fig.update_yaxes(title=None, autorange="reversed")
    return _compact(fig, 120 + 60 * max(1, timeline["site"].nunique()))


def language_heatmap(matrix: pd.DataFrame, metric: str) -> go.Figure:
    """Languages (rows, fixed order) × runs (columns); missing results stay grey."""
    labels = [chart_text(language_label(code)) for code in matrix.index]
    show_values = matrix.shape[1] <= 25
    metric = chart_text(metric)
    fig = go.Figure(go.Heatmap(
        z=matrix.to_numpy(), x=[chart_text(c) for c in matrix.columns], y=labels,
        colorscale="Viridis", colorbar={"title": metric}, hoverongaps=True,
        texttemplate="%{z:.2f}" if show_values else None,
        hovertemplate="%{y}<br>%{x}<br>" + metric + " = %{z:.4f}<extra></extra>",
        xgap=1, ygap=1,
    ))
    fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=labels, ticktext=labels)
    fig.update_xaxes(tickangle=-30)
    fig.update_layout(plot_bgcolor=GAP_COLOR)
    return _compact(fig, 720)


def array_results_chart(results: pd.DataFrame, metric: str) -> go.Figure:
    """One bar per array value of `metric` (EU languages in their fixed order first)."""
    chosen = _escaped(results[results["metric"] == metric], "value_name")
    order = [v for v in EU_LANGUAGES if v in set(chosen["value_name"])]
    order += sorted(set(chosen["value_name"]) - set(order))
    fig = px.bar(chosen, x="value_name", y="value", category_orders={"value_name": order},
                 labels={"value_name": "", "value": chart_text(metric)})
    return _compact(fig, 280)


def metric_history_chart(history: pd.DataFrame, key: str) -> go.Figure:
    chosen = _escaped(history[history["key"] == key], "run")
    fig = px.line(chosen, x="step", y="value", color="run", markers=len(chosen) <= 50,
                  labels={"value": chart_text(key)})
    return _compact(fig, 280)


def runs_by_partner_chart(runs: pd.DataFrame) -> go.Figure:
    counts = _escaped(runs, "partner").groupby(["partner", "state"]).size().reset_index(
        name="runs")
    fig = px.bar(counts, x="partner", y="runs", color="state",
                 color_discrete_map=STATE_COLORS)
    return _compact(fig, 280)


COVERAGE_COLORS = {
    "with results": "#2e7d32", "failed": "#c62828", "running": "#1565c0", "not run": "#bdbdbd",
}


def coverage_chart(coverage: pd.DataFrame) -> go.Figure:
    """One stacked bar per array stage: its cells with results, failed, running, not run."""
    fig = px.bar(
        _escaped(coverage, "stage", "summary"), x="cells", y="stage", color="part",
        orientation="h", color_discrete_map=COVERAGE_COLORS, hover_data={"summary": True},
        category_orders={"part": list(COVERAGE_COLORS)},
    )
    fig.update_yaxes(title=None, autorange="reversed")
    fig.update_xaxes(title="cells", rangemode="tozero")
    return _compact(fig, 120 + 50 * max(1, coverage["stage"].nunique()))


def checkpoint_timeline_chart(timeline: pd.DataFrame) -> go.Figure:
    """Each checkpoint a marker at the time it was found, one lane per training stage."""
    fig = px.scatter(
        _escaped(timeline, "stage", "checkpoint", "evaluated_on"), x="found", y="stage",
        text="checkpoint", hover_data={"step": True, "evaluated_on": True},
    )
    fig.update_traces(textposition="top center", marker={"size": 12})
    fig.update_yaxes(title=None)
    return _compact(fig, 120 + 60 * max(1, timeline["stage"].nunique()))
