"""Benchmark (b) of issue 13: a 9,600-cell evaluation matrix through the orchestrator.

    .venv/bin/python bench/bench_matrix.py [--languages 24] [--tasks 40] [--shots 5]
        [--checkpoints 2] [--metrics 2]

The matrix is languages × tasks × shots × checkpoints (24 × 40 × 5 × 2 = 9,600 cells:
"~10 shot/checkpoint combinations"); each cell reports `--metrics` results naming its
checkpoint. On two local sites, in a throw-away HPCFLEET_HOME (SQLite registry, SQLite
MLflow store), it measures the orchestrator's own CPU time, wall time and peak memory of:

1. planning: `launch` (the spec read and checked, its cells made, the stage planned and
   split over the sites, the run recorded): what `hpcfleet run launch` does;
2. submission: `flows.submission.submit_tasks` for the first attempt, with the run's real
   context (directories prepared, one `JobRequest` and job script per site, every task
   recorded in the store before and after the submit call). Only the local scheduler's
   start of one detached runner process per task is left out: 9,600 processes are more
   than a shared 2-core machine takes, and they are the site's work, not the
   orchestrator's. So this is "the scheduler's submit call only", nothing runs;
3. result collection: every task's metrics file written as the job would have, the jobs
   marked COMPLETED, then `flows.collect.collect_attempt` as the stage runner calls it
   after an attempt: logs fetched, a child run per job, results stored, the parent's
   `<key>/<cell>` metrics and the per-checkpoint children (`results.csv` and summaries,
   `flows.checkpoint_results`) logged. MLflow requests are counted by `Tracker.calls`
   (one per client call; the store is SQLite and the artifacts a directory, so no HTTP;
   against a server each is one request), and told apart by where they are sent.

Touches nothing outside its temporary directory. Prints a markdown section.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from benchlib import Report, process_memory

from flows import collect
from flows.checkpoint_results import CheckpointRuns
from flows.collect import collect_attempt
from flows.engine import EngineConfig, run_context
from flows.launch import launch
from flows.submission import submit_tasks
from flows.tasks import initial_tasks
from flows.tracking import Tracker
from registry.partner import Partner
from registry.results import read_results
from registry.site import Site
from registry.states import JobState
from registry.store import Store, now
from sites.local.scheduler import LocalScheduler

R = TypeVar("R")
SUBMIT_GOAL_SECONDS = 60.0
REQUESTS_PER_THOUSAND_GOAL = 1.0


# Requests sent while logging cell results (the parent's `<key>/<cell>` metrics and the
# per-checkpoint children), told apart from the per-job children's by where they are sent.
RESULT_CALLS: dict[str, Counter[str]] = {"parent": Counter(), "checkpoints": Counter()}


def _counted(
    original: Callable[..., R], into: Counter[str], tracker_of: Callable[..., Tracker]
) -> Callable[..., R]:
    def wrapper(*args: Any, **kwargs: Any) -> R:
        tracker = tracker_of(*args)
        before = Counter(tracker.calls)
        try:
            return original(*args, **kwargs)
        finally:
            into.update(tracker.calls - before)

    return wrapper


def count_result_requests() -> None:
    CheckpointRuns.log = _counted(  # type: ignore[method-assign]
        CheckpointRuns.log, RESULT_CALLS["checkpoints"], lambda runs, *_: runs.tracker
    )
    collect._ParentResults.log = _counted(  # type: ignore[method-assign]
        collect._ParentResults.log, RESULT_CALLS["parent"], lambda _, ctx: ctx.tracker
    )


@dataclass
class Phase:
    name: str
    cpu: float = 0.0
    wall: float = 0.0
    peak_kib: int = 0


@contextmanager
def measured(phase: Phase) -> Iterator[None]:
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    phase.cpu = time.process_time() - cpu
    phase.wall = time.perf_counter() - wall
    phase.peak_kib = process_memory().get("VmHWM", 0)


def write_spec(directory: Path, args: argparse.Namespace) -> Path:
    array = {
        "language": [f"l{i:02d}" for i in range(args.languages)],
        "task": [f"task{i:02d}" for i in range(args.tasks)],
        "n_shot": [str(s) for s in range(args.shots)],
        "ckpt": [f"iter_{(c + 1) * 1000:06d}" for c in range(args.checkpoints)],
    }
    stage = {
        "name": "evaluate",
        "site": {"any_of": ["site-a", "site-b"]},
        "array": array,
        "array_parallelism": 64,
        "command": ["python3", "eval.py", "{language}", "{task}", "{n_shot}", "{ckpt}"],
    }
    (directory / "eval.py").write_text("print('not run by the benchmark')\n")
    path = directory / "run.json"
    path.write_text(json.dumps({"name": "matrix", "experiment": "bench", "stages": [stage]}))
    return path


def register(store: Store) -> None:
    store.put_partner(Partner(id="bench", name="Bench"))
    for name in ("site-a", "site-b"):
        site = Site.model_validate({
            "name": name, "partner": "bench", "scheduler": "local",
            "local": {"slots": 2},
            "policy": {"min_poll_interval": "0.2s"},
        })  # fmt: skip
        store.put_site(site, "bench")


def write_metrics(metrics_file: Path, cell: dict[str, str], metrics: int) -> None:
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    with metrics_file.open("w") as out:
        for m in range(metrics):
            line = {"key": f"m{m}", "value": 0.5 + m / 100, "checkpoint": cell["ckpt"],
                    "language": cell["language"], "task": cell["task"],
                    "n_shot": cell["n_shot"]}  # fmt: skip
            out.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", type=int, default=24)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--metrics", type=int, default=2)
    args = parser.parse_args()
    cells = args.languages * args.tasks * args.shots * args.checkpoints
    report = Report(
        f"Matrices · a {cells:,}-cell evaluation matrix: planning, submission, collection",
        f".venv/bin/python bench/bench_matrix.py --languages {args.languages} --tasks "
        f"{args.tasks} --shots {args.shots} --checkpoints {args.checkpoints} "
        f"--metrics {args.metrics}",
        header=("phase", "CPU time", "wall time", "peak RSS of the process after it"),
    )
    # The runners are the site's work (one process per task), not the orchestrator's.
    LocalScheduler._start_runners = lambda self, job_id, jobdir, tasks: None  # type: ignore[method-assign]
    count_result_requests()
    with tempfile.TemporaryDirectory(prefix="hpcfleet-bench-matrix-") as scratch:
        home = Path(scratch)
        config = EngineConfig(
            database_url=f"sqlite:///{home / 'registry.db'}",
            home=home,
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            artifact_root=(home / "mlartifacts").as_uri(),
        )
        store = Store.open(config.database_url)
        register(store)
        (home / "spec").mkdir()
        spec_path = write_spec(home / "spec", args)
        planning, submission, collection = Phase("planning"), Phase("submission"), Phase("c")
        with measured(planning):
            run_id = launch(store, spec_path, "bench").run.run_id
        with run_context(config, run_id) as ctx:
            plan = ctx.plans["evaluate"]
            with measured(submission):
                jobs = submit_tasks(ctx, "evaluate", 1, initial_tasks(plan))
            stage = ctx.spec.stage("evaluate")
            for job in jobs:
                layout = ctx.layout(job.site, "evaluate")
                metrics_file = Path(layout.metrics_file(1, job.array_index or 0))
                write_metrics(metrics_file, stage.cells[job.array_index or 0], args.metrics)
            ended = now()
            jobs = [
                store.update_job(j.id, state=JobState.COMPLETED, started=ended, ended=ended)
                for j in jobs
            ]
            ctx.tracker.calls.clear()
            with measured(collection):
                collect_attempt(ctx, "evaluate", 1, jobs)
            calls = Counter(ctx.tracker.calls)
            results = len(read_results(store, run_id))
        sites = sorted({j.site for j in jobs})
    _rows(report, [planning, submission, collection], cells, len(jobs), sites)
    _mlflow(report, calls, RESULT_CALLS, results, args.checkpoints)
    report.target(
        f"submission of {cells:,} cells ≤ {SUBMIT_GOAL_SECONDS:.0f} s",
        f"{submission.wall:.1f} s wall ({submission.cpu:.1f} s CPU)",
        submission.wall <= SUBMIT_GOAL_SECONDS,
    )
    report.notes += [
        "Submission is the real path up to the scheduler's submit call; the local "
        "scheduler's one detached runner per task (9,600 processes) is not started, so no "
        "task runs. Under a profiler (960 cells), a little over half of `submit_tasks` is the "
        "store: each task is recorded SUBMITTING in one statement, then updated to PENDING "
        "in one transaction per task (`flows.submission._submit_recorded`).",
        "Results logging (the parent's `<key>/<cell>` metrics and the per-checkpoint "
        "children) meets the 1-per-1,000 target; the whole collection does not, by three "
        "orders of magnitude, because INTERFACE.md asks for a child run per array value: "
        "create, metrics and end per job (and one upload per log file when a job wrote "
        "logs; none here), 3 requests per cell. Under a profiler (480 cells) those per-job "
        "children are ~87 % of the collection's time. Meeting the target for the whole "
        "collection needs one child per (stage, site, attempt) for matrix stages: a change "
        "of the contract.",
    ]
    print(report.markdown())


def _rows(report: Report, phases: list[Phase], cells: int, jobs: int, sites: list[str]) -> None:
    names = {
        "planning": f"planning: `launch` ({cells:,} cells made, checked, split over "
        f"{len(sites)} sites, recorded)",
        "submission": f"submission: `submit_tasks` ({jobs:,} tasks recorded, one job per site; "
        "runners not started)",
        "c": f"result collection: `collect_attempt` ({jobs:,} completed jobs)",
    }
    for phase in phases:
        report.row(
            names[phase.name],
            f"{phase.cpu:.1f} s",
            f"{phase.wall:.1f} s",
            f"{phase.peak_kib / 1024:.0f} MiB",
        )
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report.notes.append(
        f"Peak RSS of the whole benchmark process: {self_peak / 1024:.0f} MiB "
        "(it includes MLflow's and SQLAlchemy's imports)."
    )


def _mlflow(
    report: Report,
    calls: Counter[str],
    result_calls: dict[str, Counter[str]],
    results: int,
    checkpoints: int,
) -> None:
    def listed(counts: Counter[str]) -> str:
        return ", ".join(f"{n:,} × {k}" for k, n in sorted(counts.items()))

    total = sum(calls.values())
    parent, children = result_calls["parent"], result_calls["checkpoints"]
    per_job = calls - parent - children
    report.row(
        f"MLflow requests of the collection, all ({results:,} results)",
        f"{total:,}",
        listed(calls),
        "",
    )
    report.row(
        "… of which the per-job child runs (INTERFACE: one per array value)",
        f"{sum(per_job.values()):,}",
        listed(per_job),
        "",
    )
    report.row(
        "… of which the cells' results on the parent (`<key>/<cell>`), per site batch",
        f"{sum(parent.values())}",
        listed(parent),
        "",
    )
    report.row(
        f"… of which the {checkpoints} per-checkpoint children (`results.csv` and summary metrics)",
        f"{sum(children.values())}",
        listed(children),
        "",
    )
    ckpt = sum(children.values())
    per_thousand = ckpt / (results / 1000) if results else math.nan
    report.target(
        f"≤ {REQUESTS_PER_THOUSAND_GOAL:g} MLflow request per 1,000 results "
        "(the per-checkpoint children)",
        f"{per_thousand:.2f} per 1,000 ({ckpt} for {results:,})",
        per_thousand <= REQUESTS_PER_THOUSAND_GOAL,
    )
    whole = total / (results / 1000) if results else math.nan
    report.target(
        f"≤ {REQUESTS_PER_THOUSAND_GOAL:g} MLflow request per 1,000 results (the whole collection)",
        f"{whole:,.0f} per 1,000 ({total:,} for {results:,})",
        whole <= REQUESTS_PER_THOUSAND_GOAL,
    )


if __name__ == "__main__":
    main()
