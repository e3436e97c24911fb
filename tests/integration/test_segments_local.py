"""Chained segments (`resumable: true` + `chain: N`) driven by the engine on a local site
(real processes, real stores): segments take over after time limits, the rest are
dropped, a failed segment fails the stage, and an orchestrator killed mid-chain is
replaced by one that follows the same segments without queueing any twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.engine import EngineConfig, execute_run
from flows.launch import launch
from registry.states import JobState, RunState
from registry.store import Store
from sites.driver import DriverPool
from tests.helpers import REPO, consortium, embedded_engine, local_site, wait_until, write_yaml

# Drives a stored run in a process of its own, which the test can kill.
ORCHESTRATOR = (
    "import sys; from pathlib import Path; from flows.engine import EngineConfig, execute_run; "
    "execute_run(EngineConfig(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]), "
    "sys.argv[5])"
)
DROPPED = "segment dropped: segment {} ended {}"

# Each segment counts itself; the third finds enough work done and finishes.
TRAINING = """
echo "$HPCFLEET_ATTEMPT" >> "$HPCFLEET_OUTPUTS/segments"
if [ "$(wc -l < "$HPCFLEET_OUTPUTS/segments")" -ge 3 ]; then
    echo done > "$HPCFLEET_OUTPUTS/model"
else
    sleep 120
fi
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Store, EngineConfig]]:
    config = embedded_engine(tmp_path)
    store = Store.open(config.database_url)
    consortium(store)
    yield store, config
    store.close()
    drivers = DriverPool(tmp_path / "sites")
    jobs = tmp_path / "sites" / "site-a" / ".hpcfleet-local" / "jobs"
    if jobs.exists():  # stop whatever a failed test left running
        scheduler = drivers.get(local_site("site-a", "cuni")).scheduler
        scheduler.cancel([p.name for p in jobs.iterdir() if p.name.isdigit()])
    drivers.close()


def start(store: Store, tmp_path: Path, script: str, **stage: Any) -> str:
    train = {
        "name": "train",
        "site": "site-a",
        "resumable": True,
        "chain": 3,
        "resources": {"time": "00:00:02"},
        "script": script,
        **stage,
    }
    document = {"name": "t", "experiment": "tests", "stages": [train]}
    return launch(store, write_yaml(tmp_path / "spec" / "run.yaml", document), "cuni").run.run_id


def outputs(tmp_path: Path, run_id: str) -> Path:
    return tmp_path / "sites" / "site-a" / "runs" / run_id / "train" / "outputs"


def names_submitted(tmp_path: Path) -> list[str]:
    """The job name of every job the local scheduler of site-a was given."""
    import json

    jobs = tmp_path / "sites" / "site-a" / ".hpcfleet-local" / "jobs"
    return sorted(
        json.loads((job / "job.json").read_text())["name"]
        for job in jobs.iterdir()
        if job.name.isdigit()
    )


def test_segments_take_over_after_time_limits_and_the_rest_is_dropped(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    run_id = start(store, tmp_path, TRAINING, outputs=["model"])

    run = execute_run(config, run_id)

    assert run.state is RunState.COMPLETED, run.reason
    jobs = store.jobs(run_id, "train")
    assert [(j.attempt, j.state) for j in jobs] == [
        (1, JobState.TIMEOUT),
        (2, JobState.TIMEOUT),
        (3, JobState.COMPLETED),
        (4, JobState.CANCELLED),
    ]
    assert jobs[3].reason == DROPPED.format(3, "completed")
    assert (outputs(tmp_path, run_id) / "segments").read_text() == "1\n2\n3\n"
    # Segment 4 was queued with the others, once, and never ran.
    assert names_submitted(tmp_path) == [f"hpcfleet-{run_id}-train-{n}" for n in (1, 2, 3, 4)]
    assert jobs[3].started is None


def test_a_failed_segment_fails_the_stage_and_drops_the_rest(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    script = (
        'touch "$HPCFLEET_OUTPUTS/ran-$HPCFLEET_ATTEMPT"; [ "$HPCFLEET_ATTEMPT" = 1 ] && sleep 120;'
        ' echo "shard 7 unreadable" >&2; exit 4'
    )
    run_id = start(store, tmp_path, script)

    run = execute_run(config, run_id)

    assert run.state is RunState.FAILED
    jobs = store.jobs(run_id, "train")
    assert [(j.attempt, j.state) for j in jobs[:2]] == [(1, JobState.TIMEOUT), (2, JobState.FAILED)]
    assert [(j.state, j.reason) for j in jobs[2:]] == [
        (JobState.CANCELLED, DROPPED.format(2, "failed"))
    ] * 2
    [stage] = store.stages(run_id)
    assert stage.reason == "train on site-a failed with exit code 4 after 2 attempts: " + (
        "shard 7 unreadable"
    )
    # Segment 3 may start once segment 2 failed (afternotok holds), but its guard sees
    # that segment 2 ended by itself and runs nothing.
    ran = sorted(p.name for p in outputs(tmp_path, run_id).iterdir())
    assert ran == ["ran-1", "ran-2"]


def test_a_restarted_orchestrator_follows_the_same_segments(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    run_id = start(store, tmp_path, TRAINING, outputs=["model"])
    orchestrator = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ORCHESTRATOR,
            config.database_url,
            str(config.home),
            config.tracking_uri,
            str(config.artifact_root),
            run_id,
        ],
        cwd=REPO,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: any(j.attempt == 1 and j.state is JobState.RUNNING for j in store.jobs(run_id)),
            timeout=120,
        )
        wait_until(lambda: len(store.jobs(run_id)) == 4, timeout=30)
    finally:
        os.killpg(orchestrator.pid, signal.SIGKILL)
        orchestrator.wait()

    run = execute_run(config, run_id)

    assert run.state is RunState.COMPLETED, run.reason
    jobs = store.jobs(run_id, "train")
    assert [j.state for j in jobs] == [
        JobState.TIMEOUT,
        JobState.TIMEOUT,
        JobState.COMPLETED,
        JobState.CANCELLED,
    ]
    assert names_submitted(tmp_path) == [f"hpcfleet-{run_id}-train-{n}" for n in (1, 2, 3, 4)]
