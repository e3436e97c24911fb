"""The launcher on a local site: `tasks_per_node` copies of a task, each with its rank,
run by the real `LocalScheduler`; the task fails when one copy fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.site import Environment
from registry.states import JobState
from sites.local.scheduler import LocalScheduler
from sites.scheduler import JobRequest, JobResources, JobStatus, TaskSpec
from tests.helpers import wait_until

PROBE = 'echo "$RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR $SITE_NOTE" > "rank-$RANK"'


@pytest.fixture
def scheduler(tmp_path: Path) -> LocalScheduler:
    # The site's env may refer to the job's own HPCFLEET_* variables.
    environment = Environment(env={"SITE_NOTE": "$HPCFLEET_STAGE-note"})
    return LocalScheduler("laptop", tmp_path / "site", slots=1, environment=environment)


def run(scheduler: LocalScheduler, workdir: Path, script: str, copies: int) -> JobStatus:
    workdir.mkdir()
    request = JobRequest(
        name=f"hpcfleet-test-{workdir.name}-1",
        workdir=str(workdir),
        log_dir=str(workdir / "logs"),
        tasks=(TaskSpec(script=script),),
        env={"HPCFLEET_STAGE": "train"},
        resources=JobResources(tasks_per_node=copies, time_seconds=60),
    )
    job_id = scheduler.submit(request)
    seen: dict[str, JobStatus] = {}

    def final() -> bool:
        seen.update(scheduler.status([job_id]))
        return job_id in seen and seen[job_id].state.is_final

    wait_until(final, timeout=30)
    return seen[job_id]


def test_each_copy_runs_with_its_own_rank(scheduler: LocalScheduler, tmp_path: Path) -> None:
    workdir = tmp_path / "ok"
    status = run(scheduler, workdir, PROBE, copies=3)
    assert status.state is JobState.COMPLETED
    lines = sorted(p.read_text().strip() for p in workdir.glob("rank-*"))
    assert lines == [f"{r} {r} 3 127.0.0.1 train-note" for r in range(3)]


def test_one_failing_copy_fails_the_task(scheduler: LocalScheduler, tmp_path: Path) -> None:
    status = run(scheduler, tmp_path / "bad", f'{PROBE}; [ "$RANK" != 1 ]', copies=3)
    assert status.state is JobState.FAILED
    assert sorted(p.name for p in (tmp_path / "bad").glob("rank-*")) == [
        "rank-0",
        "rank-1",
        "rank-2",
    ]
