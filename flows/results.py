"""Evaluation results per cell: what jobs reported, what is missing, how it is shown.

A job's result lines (`$HPCFLEET_METRICS`) may carry their cell: `{"key": "acc",
"value": 0.61, "task": "belebele", "n_shot": 5, "language": "fi"}`. Each completed job's
last value per (checkpoint, cell, metric) is stored in the registry's results table
(`registry.results`), its cell being the job's array cell, completed or overridden by
the coordinates the line names. A cell of an array stage is missing while no stored
result has its coordinates: it failed (its last job ended without one), is running
(a job for it is live), or was not run (no job ever had it). Pure, apart from
`store_job_results`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flows.metrics import parse_metrics
from registry.matrix import cell_value, text
from registry.records import JobRecord
from registry.runspec import RunSpec, Stage
from registry.states import JobState
from registry.stored_result import StoredResult

if TYPE_CHECKING:
    from registry.store import Store

# Coordinates a result line may name besides the array's own keys.
STANDARD_KEYS = ("language", "task", "n_shot")
CSV_COLUMNS = (
    "checkpoint",
    "stage",
    "language",
    "task",
    "n_shot",
    "metric",
    "value",
    "site",
    "attempt",
)
_LINE_FIELDS = frozenset({"key", "value", "step", "timestamp", "checkpoint"})


def job_results(stage: Stage, job: JobRecord, metrics_text: str) -> list[StoredResult]:
    """The last value per (checkpoint, cell, metric) of one job's result lines."""
    cell = _job_cell(stage, job)
    coordinates = set(stage.array_keys) | set(STANDARD_KEYS)
    latest: dict[tuple[str, str, str], StoredResult] = {}
    for line in metrics_text.splitlines():
        if not parse_metrics(line).points:  # blank, not JSON, or refused (logged by collect)
            continue
        record = json.loads(line)
        line_cell = dict(cell)
        for name, value in record.items():
            if name in coordinates and name not in _LINE_FIELDS and _scalar(value):
                line_cell[name] = text(value)
        checkpoint = record.get("checkpoint")
        result = StoredResult(
            stage=stage.name,
            metric=record["key"],
            value=float(record["value"]),
            site=job.site,
            attempt=job.attempt,
            cell=line_cell,
            checkpoint=checkpoint if isinstance(checkpoint, str) else job.checkpoint or "",
            array_index=job.array_index,
        )
        latest[(result.checkpoint, cell_value(line_cell) if line_cell else "", result.metric)] = (
            result
        )
    return list(latest.values())


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def _job_cell(stage: Stage, job: JobRecord) -> dict[str, str]:
    cells = stage.cells
    if job.array_index is not None and job.array_index < len(cells):
        return dict(cells[job.array_index])
    return {}


def store_job_results(
    store: Store, stage: Stage, job: JobRecord, metrics_text: str
) -> list[StoredResult]:
    """Store a completed job's results (replacing any stored before for that job); returns
    them (none for a job that did not complete)."""
    # Imported here: `run show` counts cells with this module without SQLAlchemy.
    from registry.results import replace_job_results

    if job.state is not JobState.COMPLETED:
        return []
    results = job_results(stage, job, metrics_text)
    replace_job_results(store, job.run_id, job.id, results)
    return results


@dataclass(frozen=True)
class MissingCell:
    stage: str
    index: int
    cell: dict[str, str]
    why: str  # "failed" | "running" | "not run"
    checkpoint: str = ""  # of a `for_each: checkpoint` stage


def _has_result(stage: Stage, results: Iterable[StoredResult]) -> set[tuple[str, ...]]:
    """(checkpoint, *cell) of every result of `stage`. Only a `for_each` stage covers its
    cells per checkpoint; an ordinary stage's job may still name the checkpoints it
    evaluated in its result lines, and any of them covers the cell."""
    keys = stage.array_keys
    per_checkpoint = stage.for_each is not None
    return {
        (r.checkpoint if per_checkpoint else "", *(r.cell.get(k, "") for k in keys))
        for r in results
        if r.stage == stage.name
    }


def _checkpoints_of(stage: Stage, jobs: Sequence[JobRecord]) -> list[str]:
    """The checkpoints whose cells a stage has to cover: "" for an ordinary stage; for a
    `for_each` stage, every checkpoint it started work on."""
    if stage.for_each is None:
        return [""]
    return list(dict.fromkeys(j.checkpoint for j in jobs if j.stage == stage.name and j.checkpoint))


def missing_cells(
    spec: RunSpec,
    jobs: Sequence[JobRecord],
    results: Sequence[StoredResult],
    stage: str | None = None,
) -> list[MissingCell]:
    """The cells of every array stage (or of `stage`) that have no result, in spec order."""
    missing: list[MissingCell] = []
    for entry in spec.stages:
        if not entry.cells or (stage is not None and entry.name != stage):
            continue
        done = _has_result(entry, results)
        last: dict[tuple[str, int], JobRecord] = {}
        for job in jobs:
            if job.stage == entry.name and job.array_index is not None:
                last[(job.checkpoint or "", job.array_index)] = job
        for checkpoint in _checkpoints_of(entry, jobs):
            for index, cell in enumerate(entry.cells):
                if (checkpoint, *cell.values()) in done:
                    continue
                latest = last.get((checkpoint, index))
                why = "not run" if latest is None else "running"
                if latest is not None and latest.state.is_final:
                    why = "failed"
                missing.append(MissingCell(entry.name, index, dict(cell), why, checkpoint))
    return missing


@dataclass(frozen=True)
class CellCount:
    """How many cells of an array stage have a result."""

    stage: str
    total: int
    failed: int = 0
    running: int = 0
    not_run: int = 0

    @property
    def missing(self) -> int:
        return self.failed + self.running + self.not_run

    def text(self) -> str:
        """`312/320 cells, 8 missing (5 failed, 3 not run)`."""
        shown = f"{self.total - self.missing}/{self.total} cells"
        if not self.missing:
            return shown
        parts = [
            f"{n} {what}"
            for n, what in (
                (self.failed, "failed"),
                (self.running, "running"),
                (self.not_run, "not run"),
            )
            if n
        ]
        return f"{shown}, {self.missing} missing ({', '.join(parts)})"


def cell_counts(
    spec: RunSpec, jobs: Sequence[JobRecord], results: Sequence[StoredResult]
) -> list[CellCount]:
    """One count per array stage, in spec order."""
    missing = missing_cells(spec, jobs, results)
    counts = []
    for stage in spec.stages:
        if not stage.cells:
            continue
        whys = [m.why for m in missing if m.stage == stage.name]
        counts.append(
            CellCount(
                stage.name,
                len(stage.cells) * len(_checkpoints_of(stage, jobs)),
                failed=whys.count("failed"),
                running=whys.count("running"),
                not_run=whys.count("not run"),
            )
        )
    return counts


def result_columns(spec: RunSpec, results: Sequence[StoredResult]) -> list[str]:
    """CSV_COLUMNS, with any other cell key of the results after `n_shot`."""
    return columns_for(results)


def columns_for(results: Sequence[StoredResult]) -> list[str]:
    """CSV_COLUMNS, with any other cell key of the results after `n_shot`."""
    extra = sorted({k for r in results for k in r.cell} - set(STANDARD_KEYS))
    position = CSV_COLUMNS.index("n_shot") + 1
    return [*CSV_COLUMNS[:position], *extra, *CSV_COLUMNS[position:]]


def result_rows(columns: Sequence[str], results: Iterable[StoredResult]) -> list[list[str]]:
    """One row per result; a key the result's cell lacks is empty."""
    rows = []
    for r in results:
        fixed = {
            "checkpoint": r.checkpoint,
            "stage": r.stage,
            "metric": r.metric,
            "value": repr(r.value),
            "site": r.site,
            "attempt": str(r.attempt),
        }
        rows.append([fixed[c] if c in fixed else r.cell.get(c, "") for c in columns])
    return rows


def render_csv(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def render_json(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An array of objects; `value` and `attempt` as numbers."""
    objects = []
    for row in rows:
        item: dict[str, object] = dict(zip(columns, row, strict=True))
        item["value"] = float(str(item["value"]))
        item["attempt"] = int(str(item["attempt"]))
        objects.append(item)
    return json.dumps(objects, indent=1) + "\n"


def missing_rows(missing: Iterable[MissingCell]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of `results --missing`: stage, each cell key, why."""
    listed = list(missing)
    keys: list[str] = []
    for m in listed:
        keys.extend(k for k in m.cell if k not in keys)
    if any(m.checkpoint for m in listed):
        columns = ["checkpoint", "stage", *keys, "why"]
        return columns, [
            [m.checkpoint, m.stage, *(m.cell.get(k, "") for k in keys), m.why] for m in listed
        ]
    columns = ["stage", *keys, "why"]
    return columns, [[m.stage, *(m.cell.get(k, "") for k in keys), m.why] for m in listed]
