"""What the dashboard shows, as plain data: functions over the Store and an MlflowClient.

No Streamlit here (the cached wrappers live in `dashboard.cached`); the functions
return pandas DataFrames or small frozen dataclasses. The loaders (`load_*`) do the
I/O; the rest are pure transforms, tested without a database. Nothing here opens a
connection to a site: site health is what `hpcfleet site check` stored.

Secrets: a site's environment values are never copied out (only the variable names);
an identity file appears as its path.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from dashboard.burn import BurnForecast, cumulative_usage, forecast, period_bounds
from dashboard.languages import EU_LANGUAGES
from flows.milestones import MilestoneStatus, milestone_statuses
from flows.summary import HIDDEN_METRICS, summarize
from registry.errors import HpcfleetError
from registry.records import JobRecord, ProbeRecord, RunRecord, StageRecord
from registry.site import Site

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from registry.store import Store

PARENT_FILTER = "tags.`hpcfleet.run_name` LIKE '%'"
SEARCH_PAGE = 5000
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 64 * 1024
MAX_HISTORY_RUNS = 8
MAX_HISTORY_KEYS = 8

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
CHILD_COLUMNS = [
    "mlflow_run_id", "name", "stage", "site", "attempt", "array_value", "state",
    "scheduler_id", "start", "end", "metrics",
]
_TIME_COLUMNS = ("created", "started", "ended", "submitted", "start", "end")


class MlflowUnavailable(HpcfleetError):
    """MLflow could not be read; pages show what the store alone knows."""


@contextmanager
def _mlflow(action: str) -> Iterator[None]:
    """Translate MLflow's errors (and a dead server's) at this one boundary."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise MlflowUnavailable(f"MLflow: cannot {action}: {exc.message}",
                                transient=True) from exc
    except OSError as exc:
        raise MlflowUnavailable(f"MLflow: cannot {action}: {exc}", transient=True) from exc


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for column in _TIME_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _ms(value: int | None) -> datetime | None:
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
    return _frame(rows, JOB_COLUMNS)


def runs_frame(runs: Sequence[RunRecord], jobs: pd.DataFrame) -> pd.DataFrame:
    """One row per run, newest first, with the sites its jobs ran on and their GPU-hours."""
    per_run = jobs.groupby("run_id").agg(
        sites=("site", lambda s: ", ".join(sorted(set(s)))),
        gpu_hours=("gpu_hours", "sum"),
        jobs=("job_id", "count"),
    ) if len(jobs) else pd.DataFrame(columns=["sites", "gpu_hours", "jobs"])
    rows = []
    for r in runs:
        duration = (r.ended - r.started).total_seconds() if r.started and r.ended else None
        rows.append({
            "run_id": r.run_id, "name": r.name, "partner": r.partner,
            "experiment": r.experiment, "state": r.state.value, "created": r.created,
            "started": r.started, "ended": r.ended, "duration_s": duration,
            "reason": r.reason, "mlflow_run_id": r.mlflow_run_id,
            "prefect_flow_run_id": r.prefect_flow_run_id,
        })
    frame = _frame(rows, [c for c in RUN_COLUMNS if c not in ("sites", "gpu_hours", "jobs")])
    frame = frame.join(per_run, on="run_id")
    frame["sites"] = frame["sites"].fillna("")
    frame["gpu_hours"] = frame["gpu_hours"].fillna(0.0).astype(float)
    frame["jobs"] = frame["jobs"].fillna(0).astype(int)
    return frame[RUN_COLUMNS].sort_values(["created", "run_id"], ascending=False,
                                          ignore_index=True)


def load_jobs(store: Store) -> pd.DataFrame:
    return jobs_frame(store.all_jobs())


def load_runs(store: Store, jobs: pd.DataFrame) -> pd.DataFrame:
    return runs_frame(store.list_runs(), jobs)


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


# -- sites (store: documents, probes, job records) ----------------------------------------


@dataclass(frozen=True)
class ProbeView:
    checked_at: datetime
    reachable: bool
    ok: bool
    queue_depth: int | None
    checks: tuple[tuple[str, bool, str], ...]  # (check, ok, detail)


@dataclass(frozen=True)
class AllocationView:
    forecast: BurnForecast
    usage: pd.DataFrame  # (time, used): cumulative GPU-hours in the period


@dataclass(frozen=True)
class SiteView:
    """What the Sites page shows of one site: references, never secret values."""

    name: str
    owner: str
    owner_name: str
    description: str
    scheduler: str
    login: str
    proxy_jump: tuple[str, ...]
    identity_file: str | None
    host_key: str  # "pinned", "pinned (known_hosts file)", "not pinned" or "n/a (local)"
    partitions: str
    modules: tuple[str, ...]
    env_names: tuple[str, ...]
    container_image: str | None
    storage: str | None
    shared_with: tuple[str, ...]
    labels: Mapping[str, str]
    probe: ProbeView | None
    allocation: AllocationView | None
    gpu_hours_total: float = 0.0
    jobs_total: int = 0

    @property
    def host_key_pinned(self) -> bool | None:
        if self.host_key == "n/a (local)":
            return None
        return self.host_key != "not pinned"


def site_view(
    site: Site,
    owner_name: str,
    probe: ProbeRecord | None,
    site_jobs: pd.DataFrame,
    now: datetime,
) -> SiteView:
    ssh = site.ssh
    if ssh is None:
        login, host_key = "this machine", "n/a (local)"
    else:
        login = f"{ssh.user + '@' if ssh.user else ''}{ssh.host}"
        login += f":{ssh.port}" if ssh.port else ""
        host_key = ("pinned" if ssh.host_key else
                    "pinned (known_hosts file)" if ssh.known_hosts else "not pinned")
    if site.slurm is not None:
        partitions = ", ".join(
            p.name + (f" ({p.gpus_per_node}× {p.gpu_type or 'GPU'})" if p.gpus_per_node else "")
            for p in site.slurm.partitions
        )
    else:
        local = site.local
        partitions = f"local: {local.slots if local else 2} slot(s)"
        if local and local.gpus:
            partitions += f", {local.gpus}× {local.gpu_type or 'GPU'}"
    s3 = site.storage.s3 if site.storage else None
    storage = None
    if s3 is not None:
        storage = f"s3://{s3.bucket}/{s3.prefix}" + (f" (profile {s3.profile})" if s3.profile
                                                     else "")
    allocation = None
    if site.allocation is not None:
        start, end = period_bounds(site.allocation.start, site.allocation.end)
        usage = cumulative_usage(site_jobs, start, end)
        allocation = AllocationView(
            forecast(site.allocation.gpu_hours, usage, start, end, now), usage
        )
    env = site.environment
    return SiteView(
        name=site.name, owner=site.partner, owner_name=owner_name,
        description=site.description, scheduler=site.scheduler, login=login,
        proxy_jump=tuple(ssh.proxy_jump) if ssh else (),
        identity_file=ssh.identity_file if ssh else None, host_key=host_key,
        partitions=partitions, modules=tuple(env.modules),
        env_names=tuple(sorted(env.env)),  # names only: values may be tokens
        container_image=env.container.image if env.container else None,
        storage=storage, shared_with=tuple(site.shared_with), labels=dict(site.labels),
        probe=_probe_view(probe) if probe else None, allocation=allocation,
        gpu_hours_total=float(site_jobs["gpu_hours"].sum()) if len(site_jobs) else 0.0,
        jobs_total=len(site_jobs),
    )


def _probe_view(probe: ProbeRecord) -> ProbeView:
    checks = []
    for item in probe.details.get("checks", []):
        if isinstance(item, Mapping):
            checks.append((str(item.get("name", "")), bool(item.get("ok")),
                           str(item.get("detail", ""))))
    return ProbeView(probe.checked_at, probe.reachable, probe.ok, probe.queue_depth,
                     tuple(checks))


def load_sites(store: Store, jobs: pd.DataFrame, now: datetime) -> list[SiteView]:
    partners = {p.id: p.name for p in store.list_partners()}
    probes = store.latest_probes()
    by_site = dict(iter(jobs.groupby("site"))) if len(jobs) else {}
    empty = jobs.iloc[0:0]
    return [
        site_view(record.site, partners.get(record.site.partner, record.site.partner),
                  probes.get(record.site.name), by_site.get(record.site.name, empty), now)
        for record in store.list_sites()
    ]


# -- MLflow: parent runs and their array results ---------------------------------------


def load_parent_runs(client: MlflowClient) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every hpcfleet parent run of every experiment, and their `<key>/<value>` results.

    Returns (parents, results): results is long, one row per (run, metric, value).
    """
    with _mlflow("list experiments"):
        experiments = {str(e.experiment_id): str(e.name) for e in client.search_experiments()}
    if not experiments:
        return _frame([], PARENT_COLUMNS), _frame([], RESULT_COLUMNS)
    runs: list[Any] = []
    token: str | None = None
    with _mlflow("search runs"):
        while True:
            page = client.search_runs(list(experiments), filter_string=PARENT_FILTER,
                                      max_results=SEARCH_PAGE, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    return parents_and_results(runs, experiments)


def parents_and_results(
    runs: Sequence[Any], experiments: Mapping[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    parents, results = [], []
    for run in runs:
        tags, info = run.data.tags, run.info
        run_id = tags.get("hpcfleet.run_id", "")
        name = tags.get("hpcfleet.run_name", "")
        label = f"{name} ({run_id})"
        experiment = experiments.get(str(info.experiment_id), str(info.experiment_id))
        start = _ms(info.start_time)
        parents.append({
            "mlflow_run_id": info.run_id, "experiment_id": str(info.experiment_id),
            "experiment": experiment, "run_id": run_id, "run_name": name, "label": label,
            "partner": tags.get("hpcfleet.partner", ""),
            "state": tags.get("hpcfleet.state", "RUNNING"), "status": info.status,
            "start": start, "end": _ms(info.end_time),
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
    return _frame(parents, PARENT_COLUMNS), _frame(results, RESULT_COLUMNS)


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


# -- one run in detail -------------------------------------------------------------------


@dataclass(frozen=True)
class RunDetail:
    run: RunRecord
    stages: pd.DataFrame  # one row per stage (flows.summary)
    jobs: pd.DataFrame
    children: pd.DataFrame  # MLflow child runs (empty if MLflow is unavailable)
    array_results: pd.DataFrame  # (metric, value_name, value) on the parent run
    experiment_id: str | None = None
    mlflow_error: str | None = None


def stages_frame(summaries: Sequence[Any], stages: Sequence[StageRecord]) -> pd.DataFrame:
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
    return _frame(rows, columns)


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
            "start": _ms(info.start_time), "end": _ms(info.end_time),
            "metrics": dict(child.data.metrics),
        })
    frame = _frame(rows, CHILD_COLUMNS)
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
    with _mlflow(f"read run {run.run_id}"):
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
    with _mlflow("read metric histories"):
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
    with _mlflow("read logs"), tempfile.TemporaryDirectory(prefix="hpcfleet-logs-") as tmp:
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


# -- milestones -------------------------------------------------------------------------


def load_milestones(
    store: Store, client: MlflowClient | None, today: date
) -> tuple[list[MilestoneStatus], str | None]:
    """Milestone statuses; if MLflow fails, metric criteria count as unmet, with why."""
    try:
        with _mlflow("check metric criteria"):
            return milestone_statuses(store, client, today), None
    except MlflowUnavailable as exc:
        return milestone_statuses(store, None, today), str(exc)


# -- links and totals ------------------------------------------------------------------


def mlflow_run_url(base: str, experiment_id: str, mlflow_run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{mlflow_run_id}"


def prefect_flow_run_url(base: str, flow_run_id: str) -> str:
    return f"{base}/runs/flow-run/{flow_run_id}"


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
