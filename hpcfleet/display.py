"""Rendering runs, stages and sites for people (rich) and for scripts (--json).

rich is imported on first use (`out`, `err` and the tables), not when the CLI starts:
`hpcfleet --help` and `--json` output need none of it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text

    from flows.summary import StageSummary
    from registry.records import JobRecord, RunRecord, StageRecord

    out: Console  # stdout, for people
    err: Console  # stderr: progress, warnings, confirmations

STATE_STYLES = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "COMPLETED": "green",
    "FAILED": "bold red",
    "CANCELLED": "magenta",
    "SUBMITTING": "yellow",
    "TIMEOUT": "red",
    "NODE_FAIL": "red",
    "OUT_OF_MEMORY": "red",
    "PREEMPTED": "red",
    "UNKNOWN": "dim",
}


def __getattr__(name: str) -> Console:
    """`out` and `err`, made on first use."""
    if name not in ("out", "err"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return console(name)


def console(name: str) -> Console:
    """The `out` or `err` console of this process."""
    made: Console | None = globals().get(name)
    if made is None:
        from rich.console import Console

        stream = sys.stderr if name == "err" else sys.stdout
        # Off a terminal (CI logs, pipes) rich would wrap tables at 80 columns.
        made = Console(stderr=name == "err", width=None if stream.isatty() else 140)
        globals()[name] = made
    return made


def columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table for listings that grow with history (`run list`): each column as
    wide as its widest cell, two spaces apart, one line per row. rich's tables spend
    ~3 ms of CPU on each row, seconds for a few thousand runs."""
    cells = [[" ".join(cell.split()) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in cells]  # fmt: skip
    return "\n".join(lines) + "\n"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def state_text(state: str) -> Text:
    from rich.text import Text

    return Text(state, style=STATE_STYLES.get(state, ""))


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_table(
    run: RunRecord,
    stages: Sequence[StageRecord],
    jobs: Sequence[JobRecord],
    checkpoints: Mapping[str, Sequence[str]] | None = None,
) -> Table:
    """One row per stage: state, sites, attempt, tasks done, running time, and what a
    live job waits for (the scheduler's own words: a raw state we do not know, a
    submit limit, a pending reason), else the checkpoints it wrote (`checkpoints`:
    stage -> names, oldest first). A `for_each` stage counts tasks per checkpoint."""
    from rich.table import Table

    from flows.segments import is_dropped

    table = Table(title=f"run {run.run_id}  {run.name}  [{run.state.value}]", title_justify="left")
    for column in ("stage", "state", "site", "attempt", "tasks", "time", "note"):
        table.add_column(column)
    moment = datetime.now(UTC)
    for stage in stages:
        stage_jobs = [j for j in jobs if j.stage == stage.name]
        latest: dict[tuple[str, str | None, int | None], JobRecord] = {}
        for job in stage_jobs:
            if not is_dropped(job):  # a chain's segment cancelled as not needed
                latest[(job.site, job.checkpoint, job.array_index)] = job
        done = sum(j.state.value == "COMPLETED" for j in latest.values())
        running = sum(j.state.value == "RUNNING" for j in latest.values())
        total = len(latest) or len(run.spec.stage(stage.name).array_values) or 1
        tasks = f"{done}/{total}" + (f" ({running} running)" if running else "")
        end = stage.ended or moment
        elapsed = (end - stage.started).total_seconds() if stage.started else None
        table.add_row(
            stage.name,
            state_text(stage.state.value),
            ", ".join(stage.sites) or "-",
            str(stage.attempt or "-"),
            tasks,
            duration_text(elapsed),
            _live_note(latest.values()) or _checkpoint_note((checkpoints or {}).get(stage.name)),
        )
    return table


def segment_lines(jobs: Sequence[JobRecord]) -> str:
    """The segments of a chained stage (`chain: N`): one line each, GPU-hours summed."""
    from flows.segments import segment_rows

    rows = segment_rows(jobs)
    table = [
        [
            str(row.number),
            row.job_id or "-",
            row.state,
            row.node or "-",
            _clock(row.started),
            _clock(row.ended),
            f"{row.gpu_hours:.2f}",
            row.note or "",
        ]
        for row in rows
    ]
    header = ["segment", "job", "state", "node", "started", "ended", "gpu-h", "note"]
    total = sum(row.gpu_hours for row in rows)
    return columns(header, table) + f"{len(rows)} segments, {total:.2f} GPU-hours\n"


def _clock(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _checkpoint_note(names: Sequence[str] | None) -> str:
    """`3 checkpoints, latest iter_300`."""
    if not names:
        return ""
    count = f"{len(names)} checkpoint{'s' if len(names) > 1 else ''}"
    return f"{count}, latest {names[-1]}"


def _live_note(jobs: Iterable[JobRecord]) -> str:
    """The reason of the first live job that has one: why it waits or what SLURM says."""
    return next((j.reason for j in jobs if not j.state.is_final and j.reason), "")


def watch(
    load: Callable[[], tuple[RunRecord, list[StageRecord], list[JobRecord]]],
    *,
    until: Callable[[], bool] | None = None,
    interval: float = 1.0,
    checkpoints: Callable[[], Mapping[str, Sequence[str]]] | None = None,
) -> RunRecord:
    """Live progress until the run is final (or `until()` says stop).

    Off a terminal nothing is drawn: the caller prints the summary at the end.
    Each refresh only reads the store: nothing is imported per refresh.
    """
    from rich.live import Live

    run, stages, jobs = load()
    screen = console("out")
    if not screen.is_terminal:
        while not run.state.is_final and not (until and until()):
            time.sleep(interval)
            run = load()[0]
        return run

    def found() -> Mapping[str, Sequence[str]]:
        return checkpoints() if checkpoints is not None else {}

    with Live(
        progress_table(run, stages, jobs, found()),
        console=screen,
        refresh_per_second=4,
        transient=False,
    ) as live:
        while not run.state.is_final and not (until and until()):
            time.sleep(interval)
            run, stages, jobs = load()
            live.update(progress_table(run, stages, jobs, found()))
    return run


def _metric_text(key: str, mean: float, count: int, lowest: float | None) -> str:
    if count <= 1:
        return f"{key} {mean:.4g}"
    return f"{key} mean {mean:.4g} (min {lowest:.4g}) over {count}"


def summary_table(run: RunRecord, rows: Sequence[StageSummary]) -> Group:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"run {run.run_id}  {run.name}  {run.state.value}", title_justify="left")
    for column in ("stage", "site", "state", "tasks", "attempts", "duration", "key metrics"):
        table.add_column(column)
    for row in rows:
        metrics = ", ".join(
            _metric_text(key, value, row.metric_counts.get(key, 1), row.metric_mins.get(key))
            for key, value in sorted(row.metrics.items())[:4]
        )
        table.add_row(
            row.name,
            ", ".join(row.sites),
            state_text(row.state),
            f"{row.tasks_done}/{row.tasks_total}",
            str(row.attempts),
            duration_text(row.duration_seconds),
            metrics or (row.reason or "-"),
        )
    parts: list[Any] = [table]
    if run.reason:
        parts.append(Text(f"reason: {run.reason}", style="red"))
    return Group(*parts)
