"""Segments of a chained stage (`resumable: true` + `chain: N`): what to queue, what
the end of each segment means, and which of them count for the stage's verdict. Pure.

A long training outlives a site's wall-time limit in segments: one job runs, N more
wait behind it, each segment its own attempt of the stage. When the running segment
hits its time limit (or is preempted, or its node fails) the next one, already queued,
starts at once and resumes from the checkpoint; when it ends any other way (COMPLETED,
FAILED, OUT_OF_MEMORY, CANCELLED) the segments still queued are dropped. A dropped
segment is recorded with a reason starting with `DROPPED_SEGMENT` and is left out of
the stage retry policy (`flows.retry`): the stage's verdict is that of the segment that
ended the chain.

Segment k waits with `--dependency=afternotok:<segments 1..k-1>`, not `afterany` on the
one before: SLURM starts a job within a second of its dependency ending, before any
poll can cancel it, so with afterany the segments after a COMPLETED one ran too (seen on
the sandbox: four segments of a finished training ran one after another). afternotok
on all segments before it never holds once one completed, and `--kill-on-invalid-dep`
makes SLURM cancel it at once. afternotok cannot tell FAILED from TIMEOUT, so each
segment's job also writes an end marker when its command returns by itself (a job killed
at its time limit never does), and a segment that finds an earlier one's marker exits
at once without running the command (`sites.jobscript.render_segment_guard`).

    segment   1: TIMEOUT    2: TIMEOUT    3: COMPLETED   4: dropped
              |---limit---| |---limit---| |--done--|     (cancelled while queued)
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from flows.layout import StageLayout
from registry.records import JobRecord
from registry.runspec import Stage
from registry.states import JobState
from sites.scheduler import JobRequest

DROPPED_SEGMENT = "segment dropped"
END_MARKER = "ended"  # in a segment's log dir: its command's exit status


@dataclass(frozen=True)
class SegmentPlace:
    """Where a segment stands in its chain: the attempts and job ids before it."""

    earlier_attempts: tuple[int, ...] = ()
    earlier_ids: tuple[str, ...] = ()


def segment_request(
    request: JobRequest, layout: StageLayout, attempt: int, place: SegmentPlace
) -> JobRequest:
    """The job of one segment: queued behind the earlier ones (afternotok), and guarded
    by their end markers against running after one that completed or failed."""
    return replace(
        request,
        after_not_ok=place.earlier_ids,
        end_marker=end_marker(layout, attempt),
        earlier_end_markers=tuple(end_marker(layout, a) for a in place.earlier_attempts),
    )


def end_marker(layout: StageLayout, attempt: int) -> str:
    return posixpath.join(layout.logs(attempt), END_MARKER)


def goes_on(segment: JobRecord) -> bool:
    """Whether the next queued segment takes over after `segment` ended: it was stopped
    (time limit, preemption) or lost its node, and resumes from the checkpoint."""
    return segment.state.is_resumable_interruption or segment.state is JobState.NODE_FAIL


def is_dropped(job: JobRecord) -> bool:
    return (job.reason or "").startswith(DROPPED_SEGMENT)


def dropped_reason(why: str) -> str:
    return f"{DROPPED_SEGMENT}: {why}"


def verdict_history(history: Sequence[JobRecord]) -> list[JobRecord]:
    """The jobs the stage retry policy judges: all but dropped segments."""
    return [job for job in history if not is_dropped(job)]


def follow_up_count(stage: Stage, history: Sequence[JobRecord]) -> int:
    """How many segments to queue behind a new submission of `stage`: its `chain`,
    fewer when its resumes left (`max_resumes` minus the interruptions so far) would not
    let them all run."""
    if not stage.chain:
        return 0
    used = sum(job.state.is_resumable_interruption for job in verdict_history(history))
    return max(0, min(stage.chain, stage.max_resumes - used))


@dataclass(frozen=True)
class SegmentRow:
    """One segment as `run show` lists it."""

    number: int  # 1, 2, ... within the stage
    attempt: int
    job_id: str | None
    state: str
    node: str | None
    started: datetime | None
    ended: datetime | None
    gpu_hours: float
    note: str | None  # why a segment was dropped


def segment_rows(jobs: Sequence[JobRecord]) -> list[SegmentRow]:
    """The segments of a chained stage's jobs (one job per attempt), oldest first."""
    ordered = sorted(jobs, key=lambda j: (j.attempt, j.id))
    return [
        SegmentRow(
            number=number,
            attempt=job.attempt,
            job_id=job.scheduler_id,
            state="DROPPED" if is_dropped(job) else job.state.value,
            node=job.node,
            started=job.started,
            ended=job.ended,
            gpu_hours=job.gpu_hours,
            note=job.reason[len(DROPPED_SEGMENT) + 2 :] if is_dropped(job) and job.reason else None,
        )
        for number, job in enumerate(ordered, start=1)
    ]
