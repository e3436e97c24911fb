"""One run in detail: its stages and jobs from the store, its MLflow child runs, metric
curves and log tails. Loaders do the I/O; the frame builders are pure."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from dashboard.data.queries import (
    SEARCH_PAGE,
    MlflowUnavailable,
    from_ms,
    jobs_frame,
    mlflow_errors,
    split_array_key,
    time_frame,
)
from flows.summary import HIDDEN_METRICS, StageSummary, summarize
from registry.records import RunRecord, StageRecord

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from registry.store import Store

LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 64 * 1024
MAX_HISTORY_RUNS = 8
MAX_HISTORY_KEYS = 8
CHILD_COLUMNS = [
    "mlflow_run_id", "name", "stage", "site", "attempt", "array_value", "state",
    "scheduler_id", "start", "end", "metrics",
]


@dataclass(frozen=True)
class RunDetail:
    run: RunRecord
    stages: pd.DataFrame  # one row per stage (flows.summary)
    jobs: pd.DataFrame
    children: pd.DataFrame  # MLflow child runs (empty if MLflow is unavailable)
    array_results: pd.DataFrame  # (metric, value_name, value) on the parent run
    experiment_id: str | None = None
    mlflow_error: str | None = None


def stages_frame(
    summaries: Sequence[StageSummary], stages: Sequence[StageRecord]
) -> pd.DataFrame:
    """One row per stage: its summary (tasks, attempts, metrics) and its record's times."""
    records = {s.name: s for s in stages}
    rows = []
    for summary in summaries:
        record = records.get(summary.name)
        metrics = ", ".join(
            f"{k} {v:.4g}" + (f" (mean of {summary.metric_counts[k]})"
                              if summary.metric_counts.get(k, 1) > 1 else "")
            for k, v in sorted(summary.metrics.items())
        )
        rows.append({
            "stage": summary.name, "state": summary.state, "sites": ", ".join(summary.sites),
            "tasks": f"{summary.tasks_done}/{summary.tasks_total}",
            "attempts": summary.attempts, "started": record.started if record else None,
            "ended": record.ended if record else None, "duration_s": summary.duration_seconds,
            "gpu_hours": summary.gpu_hours, "metrics": metrics, "reason": summary.reason or "",
            "choice": (record.choice or "") if record else "",
        })
    columns = ["stage", "state", "sites", "tasks", "attempts", "started", "ended",
               "duration_s", "gpu_hours", "metrics", "reason", "choice"]
    return time_frame(rows, columns)


def children_frame(children: Sequence[Any]) -> pd.DataFrame:
    rows = []
    for child in children:
        tags, info = child.data.tags, child.info
        rows.append({
            "mlflow_run_id": info.run_id, "name": tags.get("mlflow.runName", info.run_name),
            "stage": tags.get("hpcfleet.stage", ""), "site": tags.get("hpcfleet.site", ""),
            "attempt": int(tags.get("hpcfleet.attempt", "0") or 0),
            "array_value": tags.get("hpcfleet.array_value"),
            "state": tags.get("hpcfleet.state", ""),
            "scheduler_id": tags.get("slurm.job_id") or tags.get("hpcfleet.job_id"),
            "start": from_ms(info.start_time), "end": from_ms(info.end_time),
            "metrics": dict(child.data.metrics),
        })
    frame = time_frame(rows, CHILD_COLUMNS)
    return frame.sort_values(["start", "name"], ignore_index=True) if len(frame) else frame


def load_run_detail(store: Store, client: MlflowClient | None, run_id: str) -> RunDetail:
    run = store.get_run(run_id)
    stages = store.stages(run_id)
    job_records = store.jobs(run_id)
    children: list[Any] = []
    parent_metrics: dict[str, float] = {}
    experiment_id, error = None, None
    if client is not None:
        try:
            children, parent_metrics, experiment_id = _mlflow_side(client, run)
        except MlflowUnavailable as exc:
            error = str(exc)
    summaries = summarize(run, stages, job_records, children)
    results = [
        {"metric": split[0], "value_name": split[1], "value": float(value)}
        for key, value in parent_metrics.items()
        if (split := split_array_key(key)) is not None
    ]
    return RunDetail(
        run=run, stages=stages_frame(summaries, stages), jobs=jobs_frame(job_records),
        children=children_frame(children),
        array_results=pd.DataFrame(results, columns=["metric", "value_name", "value"]),
        experiment_id=experiment_id, mlflow_error=error,
    )


def _mlflow_side(client: MlflowClient, run: RunRecord) -> tuple[list[Any], dict[str, float], str]:
    with mlflow_errors(f"read run {run.run_id}"):
        if run.mlflow_run_id:
            parent = client.get_run(run.mlflow_run_id)
            experiment_id = str(parent.info.experiment_id)
            metrics = dict(parent.data.metrics)
        else:
            experiment = client.get_experiment_by_name(run.experiment)
            if experiment is None:
                return [], {}, ""
            experiment_id, metrics = str(experiment.experiment_id), {}
        children = list(client.search_runs(
            [experiment_id],
            filter_string=f"tags.`hpcfleet.run_id` = '{run.run_id.replace(chr(39), '')}' "
                          "AND tags.`mlflow.parentRunId` LIKE '%'",
            max_results=SEARCH_PAGE,
        ))
    return children, metrics, experiment_id


def load_metric_histories(client: MlflowClient, children: pd.DataFrame) -> pd.DataFrame:
    """Step-wise metric curves (e.g. a training loss) of the run's non-array child runs.

    Array children report one final value each; those are charted from the parent's
    `<key>/<value>` results instead. Bounded: a few runs, a few keys each.
    """
    columns = ["run", "key", "step", "value"]
    rows: list[dict[str, Any]] = []
    plain = children[children["array_value"].isna()] if len(children) else children
    with mlflow_errors("read metric histories"):
        for child in plain.head(MAX_HISTORY_RUNS).itertuples():
            keys = [k for k in child.metrics if k not in HIDDEN_METRICS][:MAX_HISTORY_KEYS]
            for key in keys:
                history = client.get_metric_history(child.mlflow_run_id, key)
                if len(history) < 2:
                    continue
                rows.extend({"run": child.name, "key": key, "step": int(p.step),
                             "value": float(p.value)} for p in history)
    return pd.DataFrame(rows, columns=columns)


def load_log_tails(
    client: MlflowClient, mlflow_run_id: str, lines: int = LOG_TAIL_LINES
) -> dict[str, str]:
    """The last lines of each file under the child run's `logs/` artifacts."""
    tails: dict[str, str] = {}
    with mlflow_errors("read logs"), tempfile.TemporaryDirectory(prefix="hpcfleet-logs-") as tmp:
        for item in client.list_artifacts(mlflow_run_id, "logs"):
            if item.is_dir:
                continue
            local = Path(client.download_artifacts(mlflow_run_id, item.path, tmp))
            tails[Path(item.path).name] = tail(local, lines)
    return tails


def tail(path: Path, lines: int, max_bytes: int = LOG_TAIL_BYTES) -> str:
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - max_bytes))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def mlflow_run_url(base: str, experiment_id: str, mlflow_run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{mlflow_run_id}"


def prefect_flow_run_url(base: str, flow_run_id: str) -> str:
    return f"{base}/runs/flow-run/{flow_run_id}"
