"""Parsers of SLURM output, against output recorded from the real sandbox
(tests/data/slurm/recorded, made by tests/data/slurm/record.py) and synthetic edge cases."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry.states import JobState
from sites.scheduler import JobStatus
from sites.slurm.parse import (
    SLURM_STATES,
    expand_task_ids,
    job_state,
    parse_exit_code,
    parse_gpu_count,
    parse_sacct,
    parse_squeue,
    parse_submit,
    parse_time,
    parse_wait_status,
    placeholder_ids,
    settled_ids,
)
from sites.slurm.probes import parse_associations, parse_gres_gpus, parse_sinfo, parse_versions

RECORDED = Path(__file__).resolve().parents[1] / "data" / "slurm" / "recorded"
JOBS: dict[str, str] = json.loads((RECORDED / "jobs.json").read_text())


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


# -- states ------------------------------------------------------------------------------

# Every state named in sacct(1) and squeue(1) of Slurm 22.05 "JOB STATE CODES".
MAN_PAGE_STATES = [
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "CONFIGURING", "COMPLETING", "DEADLINE",
    "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PENDING", "PREEMPTED", "RUNNING",
    "RESV_DEL_HOLD", "REQUEUE_FED", "REQUEUE_HOLD", "REQUEUED", "RESIZING", "REVOKED",
    "SIGNALING", "SPECIAL_EXIT", "STAGE_OUT", "STOPPED", "SUSPENDED", "TIMEOUT",
]  # fmt: skip


def test_every_documented_state_is_mapped() -> None:
    assert set(MAN_PAGE_STATES) <= set(SLURM_STATES)


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("CANCELLED by 1001", JobState.CANCELLED),
        ("COMPLETING", JobState.RUNNING),  # not final: the exit code may still change
        ("REQUEUED", JobState.PENDING),
        ("BOOT_FAIL", JobState.NODE_FAIL),
        ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY),
        ("PREEMPTED", JobState.PREEMPTED),
        ("TIMEOUT", JobState.TIMEOUT),
        ("SUSPENDED", JobState.RUNNING),
    ],
)
def test_states_map_to_ours(text: str, state: JobState) -> None:
    assert job_state(text) is state


def test_only_states_slurm_calls_final_are_final_here() -> None:
    slurm_final = {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
        "REVOKED",
        "SPECIAL_EXIT",
        "LAUNCH_FAILED",
        "RECONFIG_FAIL",
    }
    assert {name for name, ours in SLURM_STATES.items() if ours.is_final} == slurm_final


def test_unknown_state_is_unknown_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sites.slurm.parse"):
        assert job_state("WIBBLING_BRAND_NEW") is JobState.UNKNOWN
    assert "WIBBLING_BRAND_NEW" in caplog.text
    row = "7|WIBBLING_BRAND_NEW|0:0|Unknown|Unknown|0||n|None|x\n"
    assert parse_sacct(row)["7"].state is JobState.UNKNOWN


# -- sacct -------------------------------------------------------------------------------


def test_sacct_final_recorded() -> None:
    statuses = parse_sacct(recorded("sacct_final.stdout"))
    array = [statuses[f"{JOBS['array3']}_{i}"] for i in range(3)]
    assert all(s.state is JobState.COMPLETED and s.exit_code == 0 for s in array)
    assert [s.array_index for s in array] == [0, 1, 2]
    assert all(s.started and s.ended and s.started <= s.ended for s in array)
    throttled = [k for k in statuses if k.startswith(JOBS["throttled"] + "_")]
    assert len(throttled) == 6

    failed = statuses[JOBS["exit3"]]
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    killed = statuses[JOBS["signal9"]]
    assert (killed.state, killed.exit_code) == (JobState.FAILED, 128 + 9)
    cancelled = statuses[JOBS["cancelled"]]
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.reason == "CANCELLED by 1001"
    assert statuses[JOBS["after_ok"]].state is JobState.COMPLETED
    # --kill-on-invalid-dep=yes: cancelled once its dependency failed, never ran.
    never = statuses[JOBS["never_killed"]]
    assert never.state is JobState.CANCELLED and never.node is None
    assert statuses[JOBS["never_held"]].started is None
    assert statuses[JOBS["timeout"]].state is JobState.TIMEOUT
    assert statuses[JOBS["named"]].name == "hpcfleet-rec-find-1"


def test_gpu_hours_come_from_allocated_gpus_times_elapsed() -> None:
    statuses = parse_sacct(recorded("sacct_final.stdout"))
    gpu = statuses[JOBS["gpu"]]
    assert gpu.elapsed_seconds == 3
    assert gpu.gpu_hours == pytest.approx(1 * 3 / 3600)
    assert statuses[JOBS["exit3"]].gpu_hours == 0.0


def test_sacct_running_recorded_expands_pending_array_tasks() -> None:
    statuses = parse_sacct(recorded("sacct_running.stdout"))
    base = JOBS["throttled"]
    pending = [statuses[f"{base}_{i}"] for i in range(2, 6)]
    assert all(s.state is JobState.PENDING for s in pending)
    assert pending[0].reason == "PENDING (JobArrayTaskLimit)"
    assert statuses[f"{base}_0"].state is JobState.RUNNING
    assert statuses[JOBS["after_ok"]].reason == "PENDING (Dependency)"
    assert statuses[JOBS["gpu"]].ended is None


def test_sacct_times_are_epoch_seconds_or_none() -> None:
    assert parse_time("1795672625") == datetime.fromtimestamp(1795672625, tz=UTC)
    for empty in ("Unknown", "None", "", "N/A"):
        assert parse_time(empty) is None
    iso = parse_time("2024-05-01T12:00:00")
    assert iso is not None and iso.tzinfo is not None


def test_sacct_skips_steps_and_keeps_names_with_delimiters() -> None:
    rows = (
        "9|COMPLETED|0:0|1|2|1|cpu=1|n1|None|a|b c\n"
        "9.batch|COMPLETED|0:0|1|2|1|cpu=1|n1|None|batch\n"
        "9.0|COMPLETED|0:0|1|2|1|cpu=1|n1|None|step\n"
        "garbage line\n"
    )
    statuses = parse_sacct(rows)
    assert list(statuses) == ["9"]
    assert statuses["9"].name == "a|b c"


@pytest.mark.parametrize(
    ("job_id", "tasks"),
    [
        ("12_[0-3]", ["12_0", "12_1", "12_2", "12_3"]),
        ("12_[2-5%2]", ["12_2", "12_3", "12_4", "12_5"]),
        ("12_[1,4-5,9]", ["12_1", "12_4", "12_5", "12_9"]),
        ("12_7", ["12_7"]),
        ("12", ["12"]),
    ],
)
def test_array_ranges_expand(job_id: str, tasks: list[str]) -> None:
    assert expand_task_ids(job_id) == tasks


@pytest.mark.parametrize(
    ("text", "code"), [("0:0", 0), ("3:0", 3), ("0:9", 137), ("0:15", 143), ("", None)]
)
def test_exit_codes(text: str, code: int | None) -> None:
    assert parse_exit_code(text) == code


@pytest.mark.parametrize(("text", "code"), [("0", 0), ("768", 3), ("9", 137), ("N/A", None)])
def test_squeue_wait_status(text: str, code: int | None) -> None:
    assert parse_wait_status(text) == code


@pytest.mark.parametrize(
    ("tres", "gpus"),
    [
        ("billing=1,cpu=1,gres/gpu=1,node=1", 1),
        ("cpu=8,gres/gpu:a100=2,gres/gpu=2,node=1", 2),
        ("cpu=8,gres/gpu:a100=2,gres/gpu:v100=1", 3),
        ("cpu=1,mem=4000M", 0),
        ("", 0),
    ],
)
def test_gpu_count(tres: str, gpus: int) -> None:
    assert parse_gpu_count(tres) == gpus


# -- squeue ------------------------------------------------------------------------------


def test_squeue_running_recorded() -> None:
    statuses = parse_squeue(recorded("squeue_running.stdout"))
    base = JOBS["throttled"]
    assert statuses[f"{base}_0"].state is JobState.RUNNING
    assert statuses[f"{base}_0"].started is not None
    pending = statuses[f"{base}_4"]
    assert pending.state is JobState.PENDING
    assert pending.started is None and pending.node is None
    # A running job's end time is only an estimate: not reported.
    assert statuses[JOBS["timeout"]].ended is None
    assert statuses[JOBS["gpu"]].gpu_hours > 0


def test_squeue_final_recorded_matches_sacct() -> None:
    from_squeue = parse_squeue(recorded("squeue_final.stdout"))
    from_sacct = parse_sacct(recorded("sacct_final.stdout"))
    for key in ("array3", "exit3", "gpu", "after_ok", "named"):
        ids = [k for k in from_sacct if k.split("_")[0] == JOBS[key]]
        for job_id in ids:
            assert from_squeue[job_id].state is from_sacct[job_id].state, job_id
            assert from_squeue[job_id].exit_code == from_sacct[job_id].exit_code, job_id
            assert from_squeue[job_id].ended == from_sacct[job_id].ended, job_id
    assert from_squeue[JOBS["timeout"]].state is JobState.TIMEOUT


def test_settled_ids_need_every_task_final() -> None:
    statuses = parse_sacct(recorded("sacct_running.stdout"))
    ids = [JOBS["array3"], JOBS["exit3"], JOBS["throttled"], "999999"]
    assert settled_ids(ids, statuses) == {JOBS["exit3"]}


def test_placeholder_rows_are_told_apart_by_what_squeue_still_shows() -> None:
    plain, array = JOBS["placeholder_plain"], JOBS["placeholder_array"]
    placeholder = parse_sacct(recorded("sacct_placeholder.stdout"))
    live = parse_squeue(recorded("squeue_placeholder.stdout"))
    settled = parse_sacct(recorded("sacct_final.stdout"))
    tasks = [plain, f"{array}_0", f"{array}_1"]

    # Final in sacct, yet named "allocation" and the array still one row.
    assert settled_ids([plain, array], placeholder) == {plain, array}
    assert placeholder_ids([plain, array, f"{array}_1"], placeholder, live) == {
        plain, array, f"{array}_1",
    }  # fmt: skip
    # Rows that agree with squeue, or that squeue no longer knows, are the record.
    assert placeholder_ids([plain, array], select(live, *tasks), live) == set()
    assert placeholder_ids([JOBS["exit3"]], settled, {}) == set()


def select(statuses: dict[str, JobStatus], *task_ids: str) -> dict[str, JobStatus]:
    return {task_id: statuses[task_id] for task_id in task_ids}


# -- sbatch and probes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "job_id"),
    [("123\n", "123"), ("123;cluster\n", "123"), ("sbatch: warning: x\n77\n", "77")],
)
def test_parse_submit(stdout: str, job_id: str) -> None:
    assert parse_submit(stdout) == job_id


def test_parse_submit_recorded() -> None:
    assert parse_submit(recorded("sbatch_parsable.stdout")).isdigit()


def test_parse_submit_without_an_id_raises() -> None:
    with pytest.raises(ValueError, match="no job id"):
        parse_submit("Submitted batch job\n")


def test_versions() -> None:
    versions = parse_versions(recorded("versions.stdout") + "sacctmgr missing\n")
    assert versions["sbatch"] == versions["sacct"] == "22.05.8"
    assert versions["sacctmgr"] is None


def test_sinfo_recorded() -> None:
    partitions = parse_sinfo(recorded("sinfo.stdout"))
    assert set(partitions) == {"cpu", "gpu"}
    assert partitions["cpu"].default and not partitions["gpu"].default
    assert partitions["gpu"].gpus_per_node == 2
    assert partitions["gpu"].max_time_seconds is None
    assert partitions["gpu"].available


def test_sinfo_typed_gres_and_limits() -> None:
    partitions = parse_sinfo(
        "small-g|up|3-00:00:00|gpu:mi250x:8(S:0-7)\n"
        "small-g|up|3-00:00:00|gpu:mi250x:4\n"
        "debug*|down|30:00|(null)\n"
    )
    assert partitions["small-g"].gpus_per_node == 8
    assert partitions["small-g"].gpu_types == ("mi250x",)
    assert partitions["small-g"].max_time_seconds == 3 * 86400
    assert partitions["debug"].max_time_seconds == 1800
    assert not partitions["debug"].available


@pytest.mark.parametrize(
    ("gres", "expected"),
    [("gpu:2", (2, ())), ("gpu:a100:4(S:0-1),shard:8", (4, ("a100",))), ("(null)", (0, ()))],
)
def test_gres(gres: str, expected: tuple[int, tuple[str, ...]]) -> None:
    assert parse_gres_gpus(gres) == expected


def test_associations_recorded() -> None:
    associations = parse_associations(recorded("sacctmgr_assoc.stdout"))
    assert associations and {a.account for a in associations} == {"sandbox"}
    assert associations[0].qos == ("normal",)


def test_a_job_whose_dependency_failed_waits_forever_without_kill_on_invalid_dep() -> None:
    # Why render_sbatch adds --kill-on-invalid-dep=yes to every dependent job.
    statuses = parse_squeue(recorded("squeue_dependency_never.stdout"))
    held = statuses[JOBS["never_held"]]
    assert (held.state, held.reason) == (JobState.PENDING, "PENDING (DependencyNeverSatisfied)")
    assert statuses[JOBS["never_killed"]].state is JobState.CANCELLED
