"""What real SLURM prints across versions (20.11 to 25.05) and sites, read right:
exit codes in both squeue forms, strided arrays, OOM inside job steps, unknown state
words, submit limits, accounting without GPU TRES, and billing units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.ledger import billed_units, site_usage, with_estimated_gpu_hours
from flows.retry import failed_nodes, next_tasks
from registry.records import JobRecord
from registry.runspec import Stage
from registry.site import Site
from registry.states import JobState
from sites.errors import SubmitLimitReached
from sites.slurm.limits import never_starts, submit_limit
from sites.slurm.parse import expand_task_ids, parse_sacct, parse_squeue
from sites.slurm.scheduler import scheduler_error
from sites.transport import CommandResult
from tests.doubles import RecordingTransport, ok

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_squeue_exit_code_both_forms() -> None:
    old = parse_squeue(read("recorded/squeue_running.stdout"))
    new = parse_squeue(read("reconstructed/squeue_exit_code_23_02.stdout"))
    assert old["42"].exit_code == new["42"].exit_code == 3  # "768" and "3:0"
    assert new["47"].exit_code == 137  # "0:9": killed by signal 9
    assert new["48"].exit_code == 0


def test_strided_array_ranges() -> None:
    assert expand_task_ids("60_[1-9:2%2]") == [f"60_{i}" for i in (1, 3, 5, 7, 9)]
    assert expand_task_ids("61_[0-30:10,40]") == ["61_0", "61_10", "61_20", "61_30", "61_40"]
    squeue = parse_squeue(read("reconstructed/squeue_exit_code_23_02.stdout"))
    assert {k for k in squeue if k.startswith("60_")} == {"60_1", "60_3", "60_5", "60_7", "60_9"}
    assert {k for k in squeue if k.startswith("61_")} == {"61_0", "61_10", "61_20", "61_30"}
    sacct = parse_sacct(read("reconstructed/sacct_strided_array.stdout"))
    assert sorted(sacct) == ["60_1", "60_3", "60_5", "60_7", "60_9"]
    assert sacct["60_7"].state is JobState.PENDING


def test_oom_in_a_job_step_is_out_of_memory() -> None:
    statuses = parse_sacct(read("recorded/sacct_oom_step.stdout"))
    assert list(statuses) == ["58"]  # steps are not jobs
    assert statuses["58"].state is JobState.OUT_OF_MEMORY
    assert "step 0 OUT_OF_MEMORY" in (statuses["58"].reason or "")


def record(state: JobState, node: str = "nid001", attempt: int = 1) -> JobRecord:
    return JobRecord(
        id=attempt,
        run_id="r",
        stage="train",
        attempt=attempt,
        site="lumi",
        job_name="n",
        scheduler_id="58",
        array_index=None,
        array_value=None,
        state=state,
        node=node,
    )


def test_an_oom_step_is_neither_retried_nor_blamed_on_its_node() -> None:
    stage = Stage.model_validate({"name": "train", "site": "lumi", "command": ["x"], "retries": 3})
    oom = record(parse_sacct(read("recorded/sacct_oom_step.stdout"))["58"].state)
    assert next_tasks(stage, [oom]) == []
    assert failed_nodes([oom]) == {}
    # A plain failure on the other hand is retried away from its node.
    assert failed_nodes([record(JobState.FAILED)]) == {"lumi": {"nid001"}}


def test_unknown_state_words_stay_visible() -> None:
    statuses = parse_sacct(read("reconstructed/sacct_unknown_state.stdout"))
    assert statuses["70"].state is JobState.UNKNOWN
    assert (statuses["70"].reason or "").startswith("REQUEUED_CRON")
    assert (statuses["71"].reason or "").startswith("SOMETHING_NEW+")


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("recorded/sbatch_qos_submit_limit.stderr", "QOSMaxSubmitJobPerUserLimit"),
        ("reconstructed/sbatch_assoc_submit_limit.stderr", "AssocMaxSubmitJobLimit"),
    ],
)
def test_submit_limit_is_not_a_failure(name: str, limit: str) -> None:
    result = CommandResult("sbatch --parsable", 1, "", read(name))
    error = scheduler_error("lumi", "sbatch", result)
    assert isinstance(error, SubmitLimitReached) and error.limit == limit


def test_other_policy_refusals_stay_failures() -> None:
    stderr = read("reconstructed/sbatch_qos_wall_limit.stderr")
    assert submit_limit(stderr) is None
    error = scheduler_error("lumi", "sbatch", CommandResult("sbatch", 1, "", stderr))
    assert not isinstance(error, SubmitLimitReached)
    # Older sbatch prints only the policy message: a submit limit, by its words.
    assert submit_limit("sbatch: error: Batch job submission failed: job submit limit") == (
        "job submit limit"
    )


def test_gpu_hours_estimated_where_accounting_has_no_gpu_tres() -> None:
    status = parse_sacct(read("reconstructed/sacct_no_gpu_tres.stdout"))["80"]
    assert status.gpu_hours == 0.0
    estimated = with_estimated_gpu_hours(status, gpus_per_node=8, nodes=2, partition="standard-g")
    assert estimated.gpu_hours == pytest.approx(16.0)  # 8 GPUs × 2 nodes × 1 hour
    assert "estimated" in (estimated.reason or "")
    assert with_estimated_gpu_hours(status, 0, 2, "small").gpu_hours == 0.0


def lumi(billing: dict[str, object]) -> Site:
    return Site.model_validate(
        {
            "name": "lumi",
            "partner": "csc",
            "scheduler": "slurm",
            "slurm": {"partitions": [{"name": "standard-g", "gpus_per_node": 8}]},
            "allocation": {
                "gpu_hours": 1000,
                "start": "2026-01-01",
                "end": "2026-12-31",
                "billing": billing,
            },
        }
    )


def test_billing_in_the_sites_own_unit() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    job = record(JobState.COMPLETED).model_copy(
        update={"started": start, "ended": start + timedelta(hours=2), "gpu_hours": 32.0}
    )  # 2 nodes × 8 GCDs × 2 h
    assert billed_units(lumi({"per": "gpu", "factor": 0.5}), job) == 16.0  # MI250X = 2 GCDs
    assert billed_units(lumi({"per": "node", "factor": 1}), job, nodes=2) == 4.0  # node-hours
    usage = site_usage(
        lumi({"per": "gpu", "factor": 0.5}), [job], {"r": "cuni"}, datetime(2026, 3, 2, tzinfo=UTC)
    )
    assert usage.used == 16.0 and usage.remaining == 984.0


class _Scheduler:
    """Refuses with a submit limit `refusals` times, then queues the job."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.calls = 0

    def submit(self, request: object) -> str:
        self.calls += 1
        if self.calls <= self.refusals:
            raise SubmitLimitReached("lumi", "sbatch refused", "QOSMaxSubmitJobPerUserLimit")
        return "4242"


class _Store:
    def __init__(self) -> None:
        self.reasons: dict[int, str] = {}

    def update_job(self, job_id: int, **fields: str) -> None:
        self.reasons[job_id] = fields["reason"]


def test_a_stage_over_its_submit_limit_waits_and_resubmits() -> None:
    from types import SimpleNamespace

    from flows.submission import submit_when_room
    from tests.helpers import local_site

    site = local_site("lumi", "csc", policy={"min_poll_interval": "0.1s"})
    scheduler, store = _Scheduler(refusals=2), _Store()
    queue = RecordingTransport({"squeue": ok("2\n")})  # two jobs of ours queued: room later
    driver = SimpleNamespace(name="lumi", site=site, scheduler=scheduler, transport=queue)
    ctx = SimpleNamespace(store=store, cancel_requested=lambda: False)
    request = SimpleNamespace(name="hpcfleet-r-train-1", exclude_nodes=(), tasks=(1,))
    assert submit_when_room(ctx, driver, request, [1, 2]) == "4242"  # type: ignore[arg-type]
    assert scheduler.calls == 3
    assert store.reasons[1].startswith("waiting: the job submit limit on lumi is reached")
    assert "QOSMaxSubmitJobPerUserLimit" in store.reasons[2]


def test_a_job_over_the_submit_limit_by_itself_fails_instead_of_waiting() -> None:
    from types import SimpleNamespace

    from flows.submission import submit_when_room
    from sites.errors import SchedulerError
    from tests.helpers import local_site

    site = local_site("lumi", "csc", policy={"min_poll_interval": "0.1s"})
    scheduler = _Scheduler(refusals=100)
    queue = RecordingTransport({"squeue": ok("0\n")})  # nothing of ours to leave the queue
    driver = SimpleNamespace(name="lumi", site=site, scheduler=scheduler, transport=queue)
    ctx = SimpleNamespace(store=_Store(), cancel_requested=lambda: False)
    request = SimpleNamespace(name="hpcfleet-r-wide-1", exclude_nodes=(), tasks=(1, 2, 3))
    with pytest.raises(SchedulerError, match=r"\(3 task\(s\)\).*alone is more than"):
        submit_when_room(ctx, driver, request, [1])  # type: ignore[arg-type]
    assert scheduler.calls == 1


def test_run_show_names_the_raw_state_of_a_live_job() -> None:
    from rich.console import Console

    from hpcfleet.display import progress_table
    from registry.records import RunRecord, StageRecord
    from registry.runspec import RunSpec
    from registry.states import RunState

    spec = RunSpec.model_validate(
        {"name": "r", "stages": [{"name": "train", "site": "lumi", "command": ["x"]}]}
    )
    moment = datetime(2026, 3, 1, tzinfo=UTC)
    run = RunRecord(
        run_id="r",
        name="r",
        partner="cuni",
        experiment="r",
        state=RunState.RUNNING,
        created=moment,
        spec=spec,
    )
    stage = StageRecord(run_id="r", name="train", state=RunState.RUNNING, sites=["lumi"])
    reason = parse_sacct(read("reconstructed/sacct_unknown_state.stdout"))["70"].reason
    job = record(JobState.PENDING).model_copy(update={"reason": reason})
    console = Console(width=200, record=True)
    console.print(progress_table(run, [stage], [job]))
    assert "REQUEUED_CRON" in console.export_text()


def test_a_job_pending_over_a_per_job_limit_never_starts_and_says_what_to_change() -> None:
    [status] = parse_squeue(read("recorded/squeue_qos_max_wall.stdout")).values()

    assert status.state is JobState.PENDING
    assert status.never_starts is not None
    assert "QOSMaxWallDurationPerJobLimit" in status.never_starts
    assert "resources.time" in status.never_starts


@pytest.mark.parametrize(
    "reason",
    [
        "QOSMaxWallDurationPerJobLimit",
        "AssocMaxNodesPerJobLimit",
        "QOSMaxGRESPerJob",
        "PartitionTimeLimit",
        "InvalidQOS",
        "PENDING (BadConstraints)",
    ],
)
def test_reasons_that_never_pass(reason: str) -> None:
    assert never_starts(reason) is not None


@pytest.mark.parametrize(
    "reason",
    [
        # Aggregate limits and busy machines pass when other jobs end.
        "Resources",
        "Priority",
        "QOSMaxJobsPerUserLimit",
        "QOSGrpGRES",
        "AssocGrpCPUMinutesLimit",
        "QOSMaxSubmitJobPerUserLimit",
        "Dependency",
        # Also stands for nodes that are DOWN or DRAINED for a while.
        "PartitionNodeLimit",
        "ReqNodeNotAvail, Reserved for maintenance",
        "",
    ],
)
def test_reasons_that_may_still_pass(reason: str) -> None:
    assert never_starts(reason) is None


def test_a_follow_up_segment_over_the_submit_limit_is_refused_not_held() -> None:
    from types import SimpleNamespace

    from flows.submission import submit_when_room
    from tests.helpers import local_site

    site = local_site("lumi", "csc", policy={"min_poll_interval": "0.1s"})
    scheduler = _Scheduler(refusals=1)
    queue = RecordingTransport({"squeue": ok("2\n")})  # room would come later
    driver = SimpleNamespace(name="lumi", site=site, scheduler=scheduler, transport=queue)
    ctx = SimpleNamespace(store=_Store(), cancel_requested=lambda: False)
    request = SimpleNamespace(name="hpcfleet-r-train-3", exclude_nodes=(), tasks=(1,))
    with pytest.raises(SubmitLimitReached):
        submit_when_room(ctx, driver, request, [1], wait=False)  # type: ignore[arg-type]
    assert scheduler.calls == 1 and queue.commands == []
