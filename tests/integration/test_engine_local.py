"""The engine on local sites (real processes, real MLflow store), without Prefect:
retries, skipped dependents, resumable time-outs, out-of-place outputs, cancellation."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from flows.engine import EngineConfig, execute_run
from flows.launch import launch
from registry.states import JobState, RunState
from registry.store import Store
from tests.helpers import consortium, embedded_engine, wait_until, write_yaml


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Store, EngineConfig]:
    config = embedded_engine(tmp_path)
    store = Store.open(config.database_url)
    consortium(store)
    return store, config


def start(store: Store, tmp_path: Path, stages: list[dict[str, Any]], **spec: Any) -> str:
    document = {"name": "t", "experiment": "tests", "stages": stages, **spec}
    return launch(store, write_yaml(tmp_path / "spec" / "run.yaml", document), "cuni").run.run_id


def test_failing_job_is_retried_then_fails_with_reason_and_skips_dependents(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    run_id = start(
        store,
        tmp_path,
        [
            {
                "name": "flaky",
                "site": "site-a",
                "retries": 2,
                "script": 'echo "attempt $HPCFLEET_ATTEMPT"; echo "disk quota exceeded" >&2; exit 3',
            },
            {"name": "after", "site": "site-b", "needs": ["flaky"], "command": ["true"]},
        ],
    )
    run = execute_run(config, run_id)
    assert run.state is RunState.FAILED
    assert "stage flaky failed" in (run.reason or "")
    jobs = store.jobs(run_id, "flaky")
    assert [j.attempt for j in jobs] == [1, 2, 3]
    assert all(j.state is JobState.FAILED and j.exit_code == 3 for j in jobs)
    flaky, after = store.stages(run_id)
    assert "exit code 3 after 3 attempts: disk quota exceeded" in (flaky.reason or "")
    assert after.state is RunState.CANCELLED and "skipped: needs flaky" in (after.reason or "")
    assert store.jobs(run_id, "after") == []


def test_retry_succeeds_on_second_attempt(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    run_id = start(
        store,
        tmp_path,
        [
            {
                "name": "once",
                "site": "site-a",
                "retries": 1,
                "script": '[ "$HPCFLEET_ATTEMPT" = 2 ] || exit 1',
            },
        ],
    )
    assert execute_run(config, run_id).state is RunState.COMPLETED
    assert [j.state for j in store.jobs(run_id)] == [JobState.FAILED, JobState.COMPLETED]


def test_resumable_timeout_is_resubmitted_and_sees_its_checkpoint(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    script = (
        'if [ -f "$HPCFLEET_OUTPUTS/ckpt" ]; then echo resumed > "$HPCFLEET_OUTPUTS/done"; '
        'else echo half > "$HPCFLEET_OUTPUTS/ckpt"; sleep 120; fi'
    )
    run_id = start(
        store,
        tmp_path,
        [
            {
                "name": "long",
                "site": "site-a",
                "resumable": True,
                "resources": {"time": "00:00:02"},
                "script": script,
                "outputs": ["done"],
            },
        ],
    )
    run = execute_run(config, run_id)
    assert run.state is RunState.COMPLETED, run.reason
    states = [j.state for j in store.jobs(run_id)]
    assert states == [JobState.TIMEOUT, JobState.COMPLETED]


def test_declared_output_missing_fails_the_stage(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    run_id = start(
        store,
        tmp_path,
        [
            {"name": "p", "site": "site-a", "command": ["true"], "outputs": ["model/"]},
        ],
    )
    run = execute_run(config, run_id)
    assert run.state is RunState.FAILED
    assert "declared outputs missing on site-a: model/" in (store.stages(run_id)[0].reason or "")


def test_outputs_flow_across_sites_and_metrics_reach_mlflow(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    produce = (
        'mkdir -p "$HPCFLEET_OUTPUTS/d" && printf "%s" "payload $HPCFLEET_RUN_ID" '
        '> "$HPCFLEET_OUTPUTS/d/f.txt"'
    )
    consume = (
        'v=$(cat "$HPCFLEET_INPUTS/make/d/f.txt"); [ "$v" = "payload $HPCFLEET_RUN_ID" ] || exit 9; '
        'printf \'{"key": "score", "value": %s}\\n\' "${#HPCFLEET_ARRAY_VALUE}" >> "$HPCFLEET_METRICS"'
    )
    run_id = start(
        store,
        tmp_path,
        [
            {"name": "make", "site": "site-a", "script": produce, "outputs": ["d/"]},
            {
                "name": "use",
                "site": {"any_of": ["site-a", "site-b"]},
                "needs": ["make"],
                "array": {"word": ["a", "bb", "ccc"]},
                "script": consume,
            },
        ],
    )
    run = execute_run(config, run_id)
    assert run.state is RunState.COMPLETED, run.reason
    use = next(s for s in store.stages(run_id) if s.name == "use")
    assert set(use.sites) == {"site-a", "site-b"}
    client = MlflowClient(config.tracking_uri)
    parent = client.get_run(run.mlflow_run_id or "")
    assert {k: v for k, v in parent.data.metrics.items() if k.startswith("score/")} == {
        "score/a": 1.0,
        "score/bb": 2.0,
        "score/ccc": 3.0,
    }
    experiment = client.get_experiment_by_name("tests")
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{run.mlflow_run_id}'"
    )
    assert sorted(c.data.tags.get("hpcfleet.array_value", "-") for c in children) == [
        "-",
        "a",
        "bb",
        "ccc",
    ]


def test_cancel_stops_live_jobs(setup: tuple[Store, EngineConfig], tmp_path: Path) -> None:
    store, config = setup
    run_id = start(
        store,
        tmp_path,
        [
            {
                "name": "sleepy",
                "site": "site-a",
                "array": {"i": [1, 2]},
                "command": ["sleep", "300"],
            },
            {"name": "never", "site": "site-a", "needs": ["sleepy"], "command": ["true"]},
        ],
    )
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(run=execute_run(config, run_id)))
    worker.start()
    wait_until(lambda: sum(j.state is JobState.RUNNING for j in store.jobs(run_id)) == 2, 60)
    store.update_run(run_id, cancel_requested=True)
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert result["run"].state is RunState.CANCELLED
    assert {j.state for j in store.jobs(run_id)} == {JobState.CANCELLED}
    assert [s.state for s in store.stages(run_id)] == [RunState.CANCELLED, RunState.CANCELLED]


def test_same_site_stages_are_chained_with_afterok(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    run_id = start(
        store,
        tmp_path,
        [
            {
                "name": "first",
                "site": "site-a",
                "outputs": ["x"],
                "script": 'sleep 3; echo hello > "$HPCFLEET_OUTPUTS/x"',
            },
            {
                "name": "second",
                "site": "site-a",
                "needs": ["first"],
                "script": 'grep -q hello "$HPCFLEET_INPUTS/first/x"',
            },
        ],
    )
    run = execute_run(config, run_id)
    assert run.state is RunState.COMPLETED, run.reason
    [first] = store.jobs(run_id, "first")
    [second] = store.jobs(run_id, "second")
    # Submitted while the first still ran: no orchestration round-trip between them.
    assert second.submitted and first.ended and second.submitted < first.ended
    assert second.started and second.started >= first.ended


def test_chained_stage_waits_out_a_retry_of_its_need(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    run_id = start(
        store,
        tmp_path,
        [
            {
                "name": "first",
                "site": "site-a",
                "retries": 1,
                "script": 'sleep 1; [ "$HPCFLEET_ATTEMPT" = 2 ]',
            },
            {"name": "second", "site": "site-a", "needs": ["first"], "command": ["true"]},
        ],
    )
    run = execute_run(config, run_id)
    assert run.state is RunState.COMPLETED, run.reason
    assert [j.state for j in store.jobs(run_id, "second")] == [
        JobState.CANCELLED,
        JobState.COMPLETED,
    ]


def test_chained_stage_is_skipped_when_its_need_fails(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    run_id = start(
        store,
        tmp_path,
        [
            {"name": "first", "site": "site-a", "script": "sleep 1; exit 2"},
            {
                "name": "second",
                "site": "site-a",
                "needs": ["first"],
                "script": "touch should-not-run",
            },
        ],
    )
    run = execute_run(config, run_id)
    assert run.state is RunState.FAILED
    second = store.stages(run_id)[1]
    assert second.state is RunState.CANCELLED and "skipped: needs first" in (second.reason or "")
    assert not list((tmp_path / "sites").rglob("should-not-run"))


def test_max_queued_jobs_is_respected(setup: tuple[Store, EngineConfig], tmp_path: Path) -> None:
    store, config = setup
    from tests.helpers import local_site

    store.put_site(
        local_site(
            "tiny",
            "cuni",
            local={"slots": 4},
            policy={"max_queued_jobs": 2, "min_poll_interval": "0.2s"},
        ),
        "cuni",
    )
    run_id = start(
        store, tmp_path, [{"name": f"s{i}", "site": "tiny", "script": "sleep 1"} for i in range(4)]
    )
    seen: list[int] = []
    worker = threading.Thread(target=lambda: execute_run(config, run_id))
    worker.start()
    while worker.is_alive():
        seen.append(store.live_job_count("tiny"))
        worker.join(timeout=0.1)
    assert store.get_run(run_id).state is RunState.COMPLETED
    assert max(seen) <= 2 < len(store.jobs(run_id))


def test_resuming_a_cancelled_run_cancels_its_live_jobs(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    """The orchestrator died with a job live; `run cancel` found nobody alive to tell, and
    `run resume` must then stop that job on the site, not merely mark the stage."""
    from flows.engine import RunEnded
    from sites.driver import DriverPool
    from sites.scheduler import JobRequest, TaskSpec

    store, config = setup
    run_id = start(store, tmp_path, [{"name": "s", "site": "site-a", "command": ["sleep", "300"]}])
    scheduler = DriverPool(tmp_path / "sites").get(store.get_site("site-a").site).scheduler
    job_id = scheduler.submit(
        JobRequest(
            name=f"hpcfleet-{run_id}-s-1",
            workdir=str(tmp_path),
            log_dir=str(tmp_path / "logs"),
            tasks=(TaskSpec(argv=("sleep", "300")),),
        )
    )
    store.add_jobs(
        [
            {
                "run_id": run_id,
                "stage": "s",
                "attempt": 1,
                "site": "site-a",
                "job_name": f"hpcfleet-{run_id}-s-1",
                "scheduler_id": job_id,
                "array_index": None,
                "array_value": None,
                "state": JobState.RUNNING,
            }
        ]
    )
    store.update_stage(run_id, "s", state=RunState.RUNNING, attempt=1)
    store.update_run(run_id, state=RunState.RUNNING, cancel_requested=True)

    run = execute_run(config, run_id)
    assert run.state is RunState.CANCELLED
    assert scheduler.status([job_id])[job_id].state is JobState.CANCELLED
    with pytest.raises(RunEnded, match="already ended CANCELLED"):
        execute_run(config, run_id)
