"""What the dashboard shows, as plain data: functions over the Store and an MlflowClient.

No Streamlit here (the cached wrappers live in `dashboard.cached`); the functions
return pandas DataFrames or small frozen dataclasses. The loaders (`load_*`) do the
I/O; the rest are pure transforms, tested without a database. Nothing here opens a
connection to a site: site health is what `hpcfleet site check` stored.

This module: runs and jobs, MLflow parent runs and their per-language results,
milestones and totals. Sites are in `dashboard.data.sites`, one run in detail in
`dashboard.data.run_queries`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from dashboard.data.languages import EU_LANGUAGES
from dashboard.data.sites import SiteView
from dashboard.data.store_reads import RUN_FIELDS, read_jobs, read_runs
from flows.milestones import MilestoneStatus, milestone_statuses
from registry.errors import HpcfleetError
from registry.records import JobRecord, RunRecord

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from registry.store import Store

PARENT_FILTER = "tags.`hpcfleet.run_name` LIKE '%'"
SEARCH_PAGE = 5000

JOB_COLUMNS = [
    "job_id", "run_id", "stage", "attempt", "site", "job_name", "scheduler_id",
    "array_index", "array_value", "state", "exit_code", "reason", "submitted", "started",
    "ended", "duration_s", "gpu_hours", "node", "mlflow_run_id",
]
RUN_COLUMNS = [
    "run_id", "name", "partner", "experiment", "state", "sites", "created", "started",
    "ended", "duration_s", "gpu_hours", "jobs", "reason", "mlflow_run_id",
    "prefect_flow_run_id",
]
PARENT_COLUMNS = [
    "mlflow_run_id", "experiment_id", "experiment", "run_id", "run_name", "label",
    "partner", "state", "status", "start", "end", "gpu_hours",
]
RESULT_COLUMNS = [
    "mlflow_run_id", "experiment", "run_id", "label", "start", "metric", "value_name",
    "value",
]
_TIME_COLUMNS = ("created", "started", "ended", "submitted", "start", "end")


class MlflowUnavailable(HpcfleetError):
    """MLflow could not be read; pages show what the store alone knows."""


@contextmanager
def mlflow_errors(action: str) -> Iterator[None]:
    """Translate MLflow's errors (and a dead server's) at this one boundary."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise MlflowUnavailable(f"MLflow: cannot {action}: {exc.message}",
                                transient=True) from exc
    except OSError as exc:
        raise MlflowUnavailable(f"MLflow: cannot {action}: {exc}", transient=True) from exc


def time_frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for column in _TIME_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def from_ms(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if value else None


# -- runs and jobs (store) -------------------------------------------------------------


def jobs_frame(jobs: Sequence[JobRecord]) -> pd.DataFrame:
    """One row per job record (a scheduler job or array task of one attempt on one site)."""
    rows = [
        {
            "job_id": j.id, "run_id": j.run_id, "stage": j.stage, "attempt": j.attempt,
            "site": j.site, "job_name": j.job_name, "scheduler_id": j.scheduler_id,
            "array_index": j.array_index, "array_value": j.array_value,
            "state": j.state.value, "exit_code": j.exit_code, "reason": j.reason,
            "submitted": j.submitted, "started": j.started, "ended": j.ended,
            "duration_s": j.duration_seconds, "gpu_hours": j.gpu_hours, "node": j.node,
            "mlflow_run_id": j.mlflow_run_id,
        }
        for j in jobs
    ]
    return time_frame(rows, JOB_COLUMNS)


def run_records_frame(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """Run records as the rows `runs_frame` takes (the store_reads.read_runs columns)."""
    rows = [
        {"run_id": r.run_id, "name": r.name, "partner": r.partner, "experiment": r.experiment,
         "state": r.state.value, "created": r.created, "started": r.started, "ended": r.ended,
         "reason": r.reason, "mlflow_run_id": r.mlflow_run_id,
         "prefect_flow_run_id": r.prefect_flow_run_id}
        for r in runs
    ]
    return time_frame(rows, list(RUN_FIELDS))


def runs_frame(runs: pd.DataFrame, jobs: pd.DataFrame) -> pd.DataFrame:
    """One row per run, newest first, with the sites its jobs ran on and their GPU-hours."""
    per_run = jobs.groupby("run_id").agg(
        sites=("site", lambda s: ", ".join(sorted(set(s)))),
        gpu_hours=("gpu_hours", "sum"),
        jobs=("job_id", "count"),
    ) if len(jobs) else pd.DataFrame(columns=["sites", "gpu_hours", "jobs"])
    frame = runs.join(per_run, on="run_id")
    frame["duration_s"] = (frame["ended"] - frame["started"]).dt.total_seconds()
    frame["sites"] = frame["sites"].fillna("")
    frame["gpu_hours"] = frame["gpu_hours"].fillna(0.0).astype(float)
    frame["jobs"] = frame["jobs"].fillna(0).astype(int)
    return frame[RUN_COLUMNS].sort_values(["created", "run_id"], ascending=False,
                                          ignore_index=True)


def load_jobs(store: Store) -> pd.DataFrame:
    """Every job (the `store_reads.JOB_FIELDS` columns and `duration_s`)."""
    return read_jobs(store)


def load_runs(store: Store, jobs: pd.DataFrame) -> pd.DataFrame:
    return runs_frame(read_runs(store), jobs)


def filter_runs(runs: pd.DataFrame, **choices: Sequence[str]) -> pd.DataFrame:
    """Keep runs matching every non-empty choice; `site` matches any site of the run."""
    keep = pd.Series(True, index=runs.index)
    for column, wanted in choices.items():
        if not wanted:
            continue
        if column == "site":
            sites = runs["sites"].str.split(", ")
            keep &= sites.apply(lambda names, w=set(wanted): bool(w.intersection(names)))
        else:
            keep &= runs[column].isin(list(wanted))
    return runs[keep]


def newest_started(runs: pd.DataFrame, choices: list[str]) -> int:
    """The newest run that has started (a just-launched run has nothing to show yet)."""
    started = set(runs.loc[runs["jobs"] > 0, "run_id"])
    return next((i for i, run_id in enumerate(choices) if run_id in started), 0)


def attempt_timeline(jobs: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """One bar per (site, stage, attempt) of a run: from the first start to the last end.

    Attempts still running end at `now`; queued ones start at their submission.
    """
    columns = ["site", "stage", "attempt", "label", "start", "end", "state", "tasks"]
    if not len(jobs):
        return pd.DataFrame(columns=columns)
    rows = []
    for (site, stage, attempt), group in jobs.groupby(["site", "stage", "attempt"], sort=False):
        begun = group["started"].fillna(group["submitted"]).dropna()
        if begun.empty:
            continue
        finished = group["ended"].dropna()
        live = len(finished) < len(group)
        end = pd.Timestamp(now) if live or finished.empty else finished.max()
        states = set(group["state"])
        if live:
            state = "RUNNING" if "RUNNING" in states else "PENDING"
        elif states == {"COMPLETED"}:
            state = "COMPLETED"
        else:
            state = next(s for s in group["state"] if s != "COMPLETED")
        rows.append({
            "site": site, "stage": stage, "attempt": int(attempt),
            "label": f"{stage} #{attempt}", "start": begun.min(),
            "end": max(end, begun.min()), "state": state, "tasks": len(group),
        })
    return pd.DataFrame(rows, columns=columns)


# -- MLflow: parent runs and their array results ---------------------------------------


def parents_and_results(
    runs: Sequence[Any], experiments: Mapping[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(parents, results) of hpcfleet parent runs (see `dashboard.data.parent_index`).

    parents: one row per run; results: long, one row per (run, metric, array value).
    """
    parents, results = [], []
    for run in runs:
        tags, info = run.data.tags, run.info
        run_id = tags.get("hpcfleet.run_id", "")
        name = tags.get("hpcfleet.run_name", "")
        label = f"{name} ({run_id})"
        experiment = experiments.get(str(info.experiment_id), str(info.experiment_id))
        start = from_ms(info.start_time)
        parents.append({
            "mlflow_run_id": info.run_id, "experiment_id": str(info.experiment_id),
            "experiment": experiment, "run_id": run_id, "run_name": name, "label": label,
            "partner": tags.get("hpcfleet.partner", ""),
            "state": tags.get("hpcfleet.state", "RUNNING"), "status": info.status,
            "start": start, "end": from_ms(info.end_time),
            "gpu_hours": run.data.metrics.get("gpu_hours"),
        })
        for key, value in run.data.metrics.items():
            split = split_array_key(key)
            if split is not None:
                results.append({
                    "mlflow_run_id": info.run_id, "experiment": experiment, "run_id": run_id,
                    "label": label, "start": start, "metric": split[0],
                    "value_name": split[1], "value": float(value),
                })
    return time_frame(parents, PARENT_COLUMNS), time_frame(results, RESULT_COLUMNS)


def split_array_key(key: str) -> tuple[str, str] | None:
    """`accuracy/fi` -> ("accuracy", "fi"): an array result on a parent run."""
    metric, slash, value_name = key.partition("/")
    return (metric, value_name) if slash and metric and value_name else None


def language_matrix(
    results: pd.DataFrame, experiment: str, metric: str, last: int | None = None
) -> pd.DataFrame:
    """Rows: the 24 EU languages in their fixed order; columns: runs, oldest first.

    A cell is NaN where a run has no result for that language (a visible gap). Only runs
    with at least one result for `metric` are columns; `last` keeps the newest ones.
    """
    chosen = results[(results["experiment"] == experiment) & (results["metric"] == metric)]
    order = (chosen.groupby("label")["start"].min().sort_values(kind="stable"))
    labels = list(order.index)
    if last is not None:
        labels = labels[-last:]
    chosen = chosen[chosen["label"].isin(labels)]
    table = chosen.pivot_table(index="value_name", columns="label", values="value",
                               aggfunc="last")
    return table.reindex(index=list(EU_LANGUAGES), columns=labels).astype(float)


def array_metrics(results: pd.DataFrame, experiment: str) -> list[str]:
    """Metrics of an experiment that have per-language results, most common first."""
    chosen = results[(results["experiment"] == experiment)
                     & results["value_name"].isin(EU_LANGUAGES)]
    return list(chosen["metric"].value_counts().index)


def languages_covered(results: pd.DataFrame) -> list[str]:
    """The EU languages with at least one result in any run, in the fixed order."""
    present = set(results["value_name"]) if len(results) else set()
    return [code for code in EU_LANGUAGES if code in present]


# -- milestones -------------------------------------------------------------------------


def load_milestones(
    store: Store, client: MlflowClient | None, today: date, runs: pd.DataFrame
) -> tuple[list[MilestoneStatus], str | None]:
    """Milestone statuses; if MLflow fails, metric criteria count as unmet, with why.

    `runs` is the runs frame (newest first); it spares reading every run's spec.
    """
    names = list(zip(runs["run_id"], runs["name"], strict=True))[::-1]
    try:
        with mlflow_errors("check metric criteria"):
            return milestone_statuses(store, client, today, names), None
    except MlflowUnavailable as exc:
        return milestone_statuses(store, None, today, names), str(exc)


# -- totals ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    runs: int
    runs_by_state: Mapping[str, int]
    gpu_hours: float
    languages: tuple[str, ...]  # EU languages with results
    sites: int
    sites_healthy: int  # latest probe ok
    partners: int


def consortium_totals(
    runs: pd.DataFrame, jobs: pd.DataFrame, results: pd.DataFrame, sites: Sequence[SiteView]
) -> Totals:
    return Totals(
        runs=len(runs),
        runs_by_state={str(k): int(v) for k, v in runs["state"].value_counts().items()},
        gpu_hours=float(jobs["gpu_hours"].sum()) if len(jobs) else 0.0,
        languages=tuple(languages_covered(results)),
        sites=len(sites),
        sites_healthy=sum(1 for s in sites if s.probe is not None and s.probe.ok),
        partners=len({s.owner for s in sites} | set(runs["partner"])),
    )
