"""The tables the pages show, built from the data layer's frames. Pure: frames in,
display-ready frames out (states with icons, readable times and durations).

Table cells are text to Streamlit (never markdown), so they need no escaping.
"""

from __future__ import annotations

import pandas as pd

from dashboard import text
from dashboard.data.languages import EU_LANGUAGES, LANGUAGE_NAMES
from dashboard.data.sites import SiteView


def health(view: SiteView) -> str:
    if view.probe is None:
        return "⬜ never checked"
    if not view.probe.reachable:
        return "❌ unreachable"
    return "✅ ok" if view.probe.ok else "⚠️ problems"


def sites_table(views: list[SiteView]) -> pd.DataFrame:
    rows = []
    for v in views:
        f = v.allocation.forecast if v.allocation else None
        rows.append({
            "site": v.name, "owner": v.owner_name, "scheduler": v.scheduler,
            "health": health(v), "last probe": text.when(v.probe.checked_at if v.probe else None),
            "queue depth": v.probe.queue_depth if v.probe else None,
            "host key pinned": {True: "yes", False: "no", None: "n/a (local)"}[v.host_key_pinned],
            "GPU-h used": f.used if f else v.gpu_hours_total,
            "GPU-h granted": f.granted if f else None,
            "used %": round(100 * f.used_share, 1) if f else None,
            "forecast at period end": f"{f.projected:,.0f} h ({f.status})" if f else "-",
        })
    return pd.DataFrame(rows)


def probe_checks_table(checks: tuple[tuple[str, bool, str], ...]) -> pd.DataFrame:
    return pd.DataFrame([{"check": name, "result": "ok" if ok else "FAILED", "detail": detail}
                         for name, ok, detail in checks])


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "run": runs["run_id"], "name": runs["name"], "partner": runs["partner"],
        "experiment": runs["experiment"], "state": runs["state"].map(text.state),
        "sites": runs["sites"], "created": runs["created"].map(text.when),
        "duration": runs["duration_s"].map(text.duration),
        "GPU-hours": runs["gpu_hours"].round(3), "jobs": runs["jobs"],
        "reason": runs["reason"].fillna(""),
    })


def recent_runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "run": runs["run_id"], "name": runs["name"], "partner": runs["partner"],
        "state": runs["state"].map(text.state), "created": runs["created"].map(text.when),
    })


def stages_table(stages: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "stage": stages["stage"], "state": stages["state"].map(text.state),
        "sites": stages["sites"], "tasks": stages["tasks"], "attempts": stages["attempts"],
        "duration": stages["duration_s"].map(text.duration),
        "GPU-hours": stages["gpu_hours"].round(3), "metrics": stages["metrics"],
        "reason": stages["reason"], "placement": stages["choice"],
    })


def jobs_table(jobs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "stage": jobs["stage"], "attempt": jobs["attempt"], "site": jobs["site"],
        "scheduler id": jobs["scheduler_id"].fillna("-"),
        "task": jobs["array_value"].fillna(""), "state": jobs["state"].map(text.state),
        "exit code": jobs["exit_code"].astype("Int64"),
        "submitted": jobs["submitted"].map(text.when),
        "duration": jobs["duration_s"].map(text.duration),
        "GPU-hours": jobs["gpu_hours"].round(4), "node": jobs["node"].fillna(""),
        "exit reason": jobs["reason"].fillna(""),
    })


def coverage_table(matrix: pd.DataFrame) -> pd.DataFrame:
    """One row per EU language (fixed order): how many runs have it, and their values."""
    matrix = matrix.reindex(index=list(EU_LANGUAGES))
    rows = []
    for code in EU_LANGUAGES:
        values = matrix.loc[code].dropna() if matrix.shape[1] else pd.Series(dtype=float)
        rows.append({
            "language": code, "name": LANGUAGE_NAMES[code],
            "runs with a result": len(values),
            "latest": float(values.iloc[-1]) if len(values) else None,
            "lowest": float(values.min()) if len(values) else None,
            "highest": float(values.max()) if len(values) else None,
            "mean": float(values.mean()) if len(values) else None,
        })
    return pd.DataFrame(rows)
