"""Benchmark: `hpcfleet results` over 100,000 stored results. Goal: ≤ 2 s.

    .venv/bin/python bench/bench_results.py [--languages 25] [--tasks 100] [--shots 5]
        [--metrics 8] [--rounds 3]

Builds a throw-away store (SQLite, in a temporary HPCFLEET_HOME) holding one run whose
evaluation stage is a languages × tasks × shots matrix (12,500 cells by default), one
completed job per cell and `--metrics` results per cell (100,000 rows), then measures:

1. the work of `results RUN --format csv` in this process: open the store, read the
   run and its results, build and render the rows (median of `--rounds`);
2. the same for `results RUN --missing` (jobs read, every cell checked);
3. the CLI's wall time for `results RUN --format csv` as a subprocess (imports included).

Needs no sandbox; touches nothing outside its temporary directory. Prints a markdown
section for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from benchlib import ROOT, Report

from flows import results as shown
from registry.partner import Partner
from registry.results import StoredResult, read_results, replace_job_results
from registry.runspec import RunSpec
from registry.states import JobState
from registry.store import Store

GOAL_SECONDS = 2.0


def populate(url: str, languages: int, tasks: int, shots: int, metrics: int) -> str:
    """One run with a matrix stage, a completed job and `metrics` results per cell."""
    store = Store.open(url)
    store.put_partner(Partner(id="bench", name="Bench"))
    array = {
        "language": [f"l{i}" for i in range(languages)],
        "task": [f"t{i}" for i in range(tasks)],
        "n_shot": list(range(shots)),
    }
    stage = {"name": "evaluate", "site": "a", "array": array, "command": ["true"]}
    spec = RunSpec.model_validate({"name": "bench", "stages": [stage]})
    run_id = store.create_run("bench1", spec, "bench", {}).run_id
    cells = spec.stage("evaluate").cells
    values = spec.stage("evaluate").array_values
    jobs = store.add_jobs(
        [
            {
                "run_id": run_id,
                "stage": "evaluate",
                "attempt": 1,
                "site": "a",
                "job_name": "hpcfleet-bench1-evaluate-1",
                "scheduler_id": f"1_{i}",
                "array_index": i,
                "array_value": value,
                "state": JobState.COMPLETED,
            }
            for i, value in enumerate(values)
        ]
    )
    for job, cell in zip(jobs, cells, strict=True):
        replace_job_results(
            store,
            run_id,
            job.id,
            [
                StoredResult("evaluate", f"m{k}", 0.5 + k / 100, "a", 1, dict(cell))
                for k in range(metrics)
            ],
        )
    store.close()
    return run_id


def results_csv(url: str, run_id: str) -> int:
    store = Store.open(url)
    run = store.get_run(run_id)
    stored = read_results(store, run_id)
    columns = shown.result_columns(run.spec, stored)
    text = shown.render_csv(columns, shown.result_rows(columns, stored))
    store.close()
    return len(text)


def results_missing(url: str, run_id: str) -> int:
    store = Store.open(url)
    run = store.get_run(run_id)
    missing = shown.missing_cells(run.spec, store.jobs(run_id), read_results(store, run_id))
    store.close()
    return len(missing)


def timed(work: Callable[[], object], rounds: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", type=int, default=25)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--metrics", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cells = args.languages * args.tasks * args.shots
    total = cells * args.metrics
    report = Report(
        title=f"Matrices · `hpcfleet results` over {total:,} stored results",
        command=f".venv/bin/python bench/bench_results.py --languages {args.languages} "
        f"--tasks {args.tasks} --shots {args.shots} --metrics {args.metrics} "
        f"--rounds {args.rounds}",
        header=("measure", "median", "runs (s)"),
    )
    with tempfile.TemporaryDirectory(prefix="hpcfleet-bench-results-") as home:
        url = f"sqlite:///{home}/registry.db"
        started = time.perf_counter()
        run_id = populate(url, args.languages, args.tasks, args.shots, args.metrics)
        report.row(
            f"storing {cells:,} cells' results (setup)",
            f"{time.perf_counter() - started:.1f} s",
            "",
        )
        work, runs = timed(lambda: results_csv(url, run_id), args.rounds)
        report.row(
            "work of `results RUN --format csv` (store, read, render)",
            f"{work:.2f} s",
            ", ".join(f"{t:.2f}" for t in runs),
        )
        missing, missing_runs = timed(lambda: results_missing(url, run_id), args.rounds)
        report.row(
            f"work of `results RUN --missing` ({cells:,} cells checked)",
            f"{missing:.2f} s",
            ", ".join(f"{t:.2f}" for t in missing_runs),
        )
        env = {**os.environ, "HPCFLEET_HOME": home, "PREFECT_HOME": f"{home}/prefect"}
        env.pop("HPCFLEET_DATABASE_URL", None)
        command = [sys.executable, "-m", "hpcfleet", "results", run_id, "--format", "csv"]
        cli_times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            cli_times.append(time.perf_counter() - started)
        cli = statistics.median(cli_times)
        report.row(
            "CLI wall time, `hpcfleet results RUN --format csv` (subprocess, imports included)",
            f"{cli:.2f} s",
            ", ".join(f"{t:.2f}" for t in cli_times),
        )
    report.target(
        f"`results` over {total:,} results ≤ {GOAL_SECONDS:.0f} s",
        f"{work:.2f} s",
        work <= GOAL_SECONDS,
    )
    report.notes.append(
        "Results are read with SQLAlchemy Core (no ORM objects), one query per command; "
        "missing cells are a set difference over the cells' coordinates. The CLI row adds "
        "the interpreter's imports (no bytecode cache on this machine, see "
        "shared/notes/facts.md)."
    )
    print(report.markdown())


if __name__ == "__main__":
    main()
