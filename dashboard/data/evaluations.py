"""Evaluations of checkpoints: the checkpoint × language heatmap, a run's coverage, the
checkpoint timeline of a training stage. Store rows in, frames out; pure apart from
`load_evaluation`, which reads one run.

Results come from the registry's results table (`registry.results`), one row per
(checkpoint, cell, metric) and attempt. The heatmap shows the latest attempt's value of
each cell; the cells a stage planned (its array) that have no result are NaN, shown grey.
Coverage counts come from `flows.results.cell_counts`, the same numbers as the run's
summary and `run show`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from dashboard.data.languages import EU_LANGUAGES
from flows.results import CellCount, cell_counts
from registry.checkpoints import checkpoint_step, read_checkpoints
from registry.results import StoredResult, read_results

if TYPE_CHECKING:
    from registry.store import Store

LANGUAGE = "language"
CELL_PREFIX = "cell:"  # cell keys may be named like the fixed columns (`site`, `metric`)
FIXED_COLUMNS = ["stage", "checkpoint", "metric", "value", "site", "attempt"]
NO_CHECKPOINT = "(no checkpoint)"  # the column of results that name none
COVERAGE_PARTS = ("with results", "failed", "running", "not run")
TIMELINE_COLUMNS = ["stage", "checkpoint", "found", "step", "evaluated_on"]


def cell_column(key: str) -> str:
    return CELL_PREFIX + key


def results_frame(results: Sequence[StoredResult]) -> pd.DataFrame:
    """One row per stored result: FIXED_COLUMNS and a `cell:<key>` column per cell key
    (empty where a result's cell lacks the key)."""
    keys = sorted({k for r in results for k in r.cell})
    rows = [
        [r.stage, r.checkpoint, r.metric, r.value, r.site, r.attempt,
         *(r.cell.get(k, "") for k in keys)]
        for r in results
    ]  # fmt: skip
    columns = [*FIXED_COLUMNS, *map(cell_column, keys)]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"value": float, "attempt": int})


def cell_keys(frame: pd.DataFrame) -> list[str]:
    return [c.removeprefix(CELL_PREFIX) for c in frame.columns if c.startswith(CELL_PREFIX)]


def latest_results(frame: pd.DataFrame) -> pd.DataFrame:
    """The latest attempt's row of every (stage, checkpoint, cell, metric)."""
    identity = ["stage", "checkpoint", "metric", *map(cell_column, cell_keys(frame))]
    ordered = frame.sort_values("attempt", kind="stable")
    return ordered.drop_duplicates(identity, keep="last").sort_index()


def heatmap_stages(cells_by_stage: Mapping[str, Sequence[Mapping[str, str]]],
                   frame: pd.DataFrame) -> list[str]:
    """Stages whose cells (planned, or as their results name them) have a language."""
    with_results = set()
    if cell_column(LANGUAGE) in frame.columns:
        named = frame[frame[cell_column(LANGUAGE)] != ""]
        with_results = set(named["stage"])
    return [
        stage for stage, cells in cells_by_stage.items()
        if (cells and LANGUAGE in cells[0]) or stage in with_results
    ]  # fmt: skip


def picker_keys(cells: Sequence[Mapping[str, str]], stage_results: pd.DataFrame) -> list[str]:
    """The coordinates the heatmap fixes with a picker: every key but the language, the
    array's first (task, n_shot, ... as written), then those only results name."""
    keys = [k for k in (cells[0] if cells else {}) if k != LANGUAGE]
    named = [
        k for k in cell_keys(stage_results)
        if k != LANGUAGE and k not in keys and (stage_results[cell_column(k)] != "").any()
    ]  # fmt: skip
    return keys + named


def picker_values(
    key: str, cells: Sequence[Mapping[str, str]], stage_results: pd.DataFrame
) -> list[str]:
    """A picker's choices: the planned values in array order, then values only results have."""
    values = list(dict.fromkeys(c[key] for c in cells if key in c))
    if cell_column(key) in stage_results.columns:
        seen = stage_results[cell_column(key)]
        values += sorted(set(seen[seen != ""]) - set(values))
    return values


def checkpoint_order(names: Iterable[str]) -> list[str]:
    """Checkpoints by their step (the last number in the name), then by name."""
    unique = set(names)
    return sorted(unique, key=lambda n: (checkpoint_step(n) is None, checkpoint_step(n) or 0, n))


def language_order(codes: Iterable[str]) -> list[str]:
    """The 24 EU languages in their fixed order first, any other code after, sorted."""
    present = set(codes)
    return [c for c in EU_LANGUAGES if c in present] + sorted(present - set(EU_LANGUAGES))


def checkpoint_language_matrix(
    latest: pd.DataFrame,
    cells: Sequence[Mapping[str, str]],
    stage: str,
    metric: str,
    fixed: Mapping[str, str],
    checkpoints: Sequence[str] = (),
) -> pd.DataFrame:
    """Languages (rows) × checkpoints (columns, by step) of `metric` for the cells that
    match `fixed` (e.g. {task: belebele, n_shot: 5}); NaN where a planned cell has no result.

    Planned: the stage's cells matching `fixed` (on the keys the array has), at every
    checkpoint in `checkpoints` or with a result of the stage. A result naming a
    language the array does not plan is shown too (a job may name its cell's language).
    """
    chosen = latest[(latest["stage"] == stage) & (latest["metric"] == metric)]
    for key, value in fixed.items():
        column = cell_column(key)
        chosen = chosen[chosen[column] == value] if column in chosen.columns else chosen[:0]
    language = cell_column(LANGUAGE)
    chosen = chosen[chosen[language] != ""] if language in chosen.columns else chosen[:0]
    planned = [
        c[LANGUAGE] for c in cells
        if LANGUAGE in c and all(c[k] == v for k, v in fixed.items() if k in c)
    ]  # fmt: skip
    staged = latest[latest["stage"] == stage]
    names = [*checkpoints, *staged["checkpoint"]]
    columns = [n or NO_CHECKPOINT for n in checkpoint_order(names)] or [NO_CHECKPOINT]
    rows = language_order([*planned, *chosen[language]])
    matrix = pd.DataFrame(float("nan"), index=rows, columns=columns, dtype=float)
    for code, checkpoint, value in zip(
        chosen[language], chosen["checkpoint"], chosen["value"], strict=True
    ):
        matrix.loc[code, checkpoint or NO_CHECKPOINT] = value
    return matrix


def coverage_frame(counts: Sequence[CellCount]) -> pd.DataFrame:
    """Per array stage and part (with results, failed, running, not run): how many cells;
    `summary` is the run's own text (`312/320 cells, 8 missing (5 failed, 3 not run)`)."""
    rows = []
    for count in counts:
        parts = (count.total - count.missing, count.failed, count.running, count.not_run)
        rows += [
            {"stage": count.stage, "part": part, "cells": n, "summary": count.text()}
            for part, n in zip(COVERAGE_PARTS, parts, strict=True)
        ]
    return pd.DataFrame(rows, columns=["stage", "part", "cells", "summary"])


def checkpoint_timeline(
    rows: Iterable[Mapping[str, Any]], results: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The checkpoints of training stages as a timeline, oldest first.

    `rows` are checkpoint records as plain dicts: `stage`, `name`, `found` (a datetime),
    and optionally `sites` (where it is being evaluated). The sites of the run's stored
    results (a `results_frame`) for the checkpoint are added to those. The step is the
    last number in the name.
    """
    evaluated: dict[str, set[str]] = {}
    if results is not None:
        for checkpoint, site in zip(results["checkpoint"], results["site"], strict=True):
            if checkpoint:
                evaluated.setdefault(checkpoint, set()).add(site)
    timeline = []
    for row in rows:
        name = str(row["name"])
        sites = set(row.get("sites") or ()) | evaluated.get(name, set())
        found: datetime | None = row.get("found")
        timeline.append({
            "stage": str(row["stage"]), "checkpoint": name,
            "found": pd.Timestamp(found) if found is not None else pd.NaT,
            "step": checkpoint_step(name), "evaluated_on": ", ".join(sorted(sites)),
        })  # fmt: skip
    frame = pd.DataFrame(timeline, columns=TIMELINE_COLUMNS)
    frame["found"] = pd.to_datetime(frame["found"], utc=True)
    frame["step"] = frame["step"].astype("Int64")
    return frame.sort_values(["found", "stage"], kind="stable", ignore_index=True)


@dataclass(frozen=True)
class Evaluation:
    """What the evaluations page shows of one run."""

    run_id: str
    name: str
    cells: dict[str, list[dict[str, str]]]  # planned cells of each array stage, spec order
    results: pd.DataFrame  # results_frame of every stored result
    coverage: pd.DataFrame  # coverage_frame
    # The checkpoints of its training stages (`checkpoint_timeline` rows), oldest first.
    checkpoints: list[dict[str, Any]] = field(default_factory=list)


def load_evaluation(store: Store, run_id: str) -> Evaluation:
    """One run's planned cells, stored results, coverage and checkpoints (four reads of
    the store)."""
    run = store.get_run(run_id)
    stored = read_results(store, run_id)
    jobs = store.jobs(run_id)
    counts = cell_counts(run.spec, jobs, stored)
    cells = {s.name: [dict(c) for c in s.cells] for s in run.spec.stages if s.cells}
    # Where each checkpoint is being evaluated: the sites of the jobs that run on it.
    sites: dict[str, set[str]] = {}
    for job in jobs:
        if job.checkpoint:
            sites.setdefault(job.checkpoint, set()).add(job.site)
    checkpoints = [
        {"stage": c.stage, "name": c.name, "found": c.found, "sites": sorted(sites.get(c.name, ()))}
        for c in read_checkpoints(store, run_id)
    ]
    return Evaluation(
        run_id, run.name, cells, results_frame(stored), coverage_frame(counts), checkpoints
    )
