"""SlurmScheduler over a scripted transport: which commands it runs, what it makes of
the answers (recorded from the sandbox), and how SLURM's failures become errors."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from registry.site import Environment, Partition, SlurmSettings
from registry.states import JobState
from sites.errors import SchedulerError
from sites.scheduler import JobRequest, TaskSpec
from sites.slurm.scheduler import (
    PAIR_MARK,
    SlurmScheduler,
    account_check_command,
    cancel_command,
    exclude_nodes_command,
    find_by_name_command,
    parse_update_refusals,
    status_command,
    status_pair_command,
    submit_command,
    tail_command,
)
from sites.transport import CommandResult
from tests.doubles import Call, RecordingTransport, Reply, fail, ok

RECORDED = Path(__file__).resolve().parents[1] / "data" / "slurm" / "recorded"
SETTINGS = SlurmSettings(account="sandbox", partitions=[Partition(name="cpu", default=True)])


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def answer_pair(transport: RecordingTransport, call: Call) -> CommandResult:
    """sacct and squeue in one command (`status_pair_command`), as a shell runs them."""
    sacct_part = call.command.split("; printf", 1)[0]
    squeue_part = call.command.split('"$?"; ', 1)[1]
    sacct, squeue = transport.answer(Call(sacct_part)), transport.answer(Call(squeue_part))
    return CommandResult(
        call.command,
        squeue.returncode,
        f"{sacct.stdout}\n{PAIR_MARK} {sacct.returncode}\n{squeue.stdout}",
        sacct.stderr + squeue.stderr,
    )


def scheduler(
    replies: dict[str, Reply], **kwargs: bool
) -> tuple[SlurmScheduler, RecordingTransport]:
    """A scheduler whose commands get `replies`; squeue knows nothing unless told."""
    script: dict[str, Reply] = {}
    transport = RecordingTransport(script, site="site-b")
    script[PAIR_MARK] = lambda call: answer_pair(transport, call)
    script.update(replies)
    script.setdefault("squeue", ok())
    return SlurmScheduler("site-b", transport, SETTINGS, Environment(), **kwargs), transport


REQUEST = JobRequest(
    name="hpcfleet-r1-s-1", workdir="/w d", log_dir="/w d/logs", tasks=(TaskSpec(argv=("true",)),)
)


def test_submit_sends_the_script_on_stdin_and_returns_the_id() -> None:
    sched, transport = scheduler({"sbatch": ok(recorded("sbatch_parsable.stdout"))})
    job_id = sched.submit(REQUEST)
    assert job_id == recorded("sbatch_parsable.stdout").strip()
    assert transport.commands == [submit_command(REQUEST)]
    assert transport.stdins[0] == sched.render(REQUEST).encode()
    # The directories exist before sbatch runs, owner-only; the paths are quoted.
    assert shlex.split(transport.commands[0].split("&&")[0]) == ["umask", "077"]
    assert shlex.split(transport.commands[0].split("&&")[1]) == [
        "mkdir",
        "-p",
        "--",
        "/w d/logs",
        "/w d",
    ]


def test_submit_reads_federated_ids() -> None:
    sched, _ = scheduler({"sbatch": ok("sbatch: warning: something\n1234;cluster-a\n")})
    assert sched.submit(REQUEST) == "1234"


@pytest.mark.parametrize(
    ("stderr_file", "transient"),
    [
        ("sbatch_invalid_partition.stderr", False),
        ("sbatch_node_config.stderr", False),
        ("sbatch_controller_down.stderr", True),
    ],
)
def test_submit_failures_say_whether_a_retry_helps(stderr_file: str, transient: bool) -> None:
    stderr = recorded(stderr_file)
    sched, _ = scheduler({"sbatch": fail(stderr)})
    with pytest.raises(SchedulerError) as error:
        sched.submit(REQUEST)
    assert error.value.transient is transient
    assert stderr.strip().splitlines()[-1] in str(error.value)
    assert "site-b" in str(error.value)


@pytest.mark.parametrize(
    ("stderr", "transient"),
    [
        (
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
            True,
        ),
        ("squeue: error: slurm_receive_msg: Socket timed out on send/recv operation", True),
        ("sacct: error: Problem talking to the database: Connection refused", True),
        (
            "sbatch: error: Batch job submission failed: Invalid account or account/partition "
            "combination specified",
            False,
        ),
        ("sbatch: error: Batch job submission failed: Job violates accounting/QOS policy", False),
    ],
)
def test_error_messages_are_classified(stderr: str, transient: bool) -> None:
    sched, _ = scheduler({"sbatch": fail(stderr)})
    with pytest.raises(SchedulerError) as error:
        sched.submit(REQUEST)
    assert error.value.transient is transient


def test_status_is_one_command_when_everything_is_final() -> None:
    sched, transport = scheduler({"sacct": ok(recorded("sacct_final.stdout"))})
    statuses = sched.status(["40", "42"])
    assert transport.commands == [status_pair_command(["40", "42"])]
    assert sorted(statuses) == ["40_0", "40_1", "40_2", "42"]
    assert statuses["42"].state is JobState.FAILED
    assert statuses["42"].exit_code == 3


def test_status_asks_squeue_only_about_jobs_sacct_has_not_caught_up_with() -> None:
    # Right after sbatch, sacct knows some jobs by a placeholder row, others not at all.
    sched, transport = scheduler(
        {
            "sacct": ok(recorded("sacct_just_submitted.stdout")),
            "squeue": ok(recorded("squeue_running.stdout")),
        }
    )
    statuses = sched.status(["40", "41", "42"])
    [command] = transport.commands  # one round trip: sacct and squeue in one command
    assert command.count("--jobs=40,41,42") == 2
    # The array's placeholder row is replaced by its tasks as slurmctld sees them.
    assert "40" not in statuses
    assert sorted(statuses) == [f"40_{i}" for i in range(3)] + [f"41_{i}" for i in range(6)] + [
        "42"
    ]
    assert statuses["42"].exit_code == 3


def test_status_trusts_sacct_for_final_jobs_and_squeue_for_the_others() -> None:
    sched, transport = scheduler(
        {
            "sacct": ok(recorded("sacct_running.stdout")),
            "squeue": ok(recorded("squeue_final.stdout")),
        }
    )
    statuses = sched.status(["42", "48", "41"])
    assert len(transport.commands) == 1
    assert statuses["42"].exit_code == 3
    assert statuses["48"].state is JobState.COMPLETED
    assert all(statuses[f"41_{i}"].state is JobState.COMPLETED for i in range(6))


def test_status_sees_through_a_final_placeholder_row_while_squeue_knows_the_job() -> None:
    # Recorded just after two jobs ended: sacct shows each as one COMPLETED row named
    # "allocation" (the array not yet split into tasks); squeue has the real picture.
    sched, transport = scheduler(
        {
            "sacct": ok(recorded("sacct_placeholder.stdout")),
            "squeue": ok(recorded("squeue_placeholder.stdout")),
        }
    )
    jobs = json.loads((RECORDED / "jobs.json").read_text())
    plain, array = jobs["placeholder_plain"], jobs["placeholder_array"]
    statuses = sched.status([plain, array])
    assert len(transport.commands) == 1
    assert sorted(statuses) == [plain, f"{array}_0", f"{array}_1"]
    assert statuses[plain].name == "hpcfleet-rec-placeholder-1"
    assert {statuses[f"{array}_{i}"].name for i in (0, 1)} == {"hpcfleet-rec-placeholder-2"}
    assert all(s.state is JobState.COMPLETED for s in statuses.values())


def test_a_failing_squeue_does_not_matter_when_sacct_has_settled_everything() -> None:
    sched, _ = scheduler(
        {
            "sacct": ok(recorded("sacct_final.stdout")),
            "squeue": fail("squeue: error: Unable to contact slurm controller (connect failure)"),
        }
    )
    assert sorted(sched.status(["40", "42"])) == ["40_0", "40_1", "40_2", "42"]


def test_status_of_jobs_nobody_knows_is_empty() -> None:
    sched, _ = scheduler(
        {
            "sacct": ok(recorded("sacct_unknown_id.stdout")),
            "squeue": fail(recorded("squeue_unknown_id.stderr")),
        }
    )
    assert sched.status(["999999"]) == {}


def test_status_falls_back_to_squeue_when_accounting_is_disabled() -> None:
    sched, transport = scheduler(
        {
            "sacct": fail(recorded("sacct_accounting_disabled.stderr")),
            "squeue": ok(recorded("squeue_final.stdout")),
        }
    )
    first = sched.status(["42"])
    assert first["42"].state is JobState.FAILED and first["42"].exit_code == 3
    assert sched.accounting is False
    sched.status(["42"])
    # Once found out, sacct is not tried again.
    assert [c.split()[2] for c in transport.commands] == ["sacct", "squeue"]


def test_status_without_accounting_never_calls_sacct() -> None:
    sched, transport = scheduler({"squeue": ok("")}, accounting=False)
    assert sched.status(["5"]) == {}
    assert all("sacct" not in c for c in transport.commands)


def test_status_of_nothing_runs_nothing() -> None:
    sched, transport = scheduler({})
    assert sched.status([]) == {}
    assert transport.commands == []


def test_sacct_failure_is_a_transient_scheduler_error() -> None:
    sched, _ = scheduler(
        {"sacct": fail("sacct: error: Problem talking to the database: Connection refused")}
    )
    with pytest.raises(SchedulerError) as error:
        sched.status(["1"])
    assert error.value.transient


def test_cancel_is_one_scancel_for_all_jobs() -> None:
    sched, transport = scheduler({"scancel": ok()})
    sched.cancel(["20", "21_3"])
    assert transport.commands == ["scancel 20 21_3"]


@pytest.mark.parametrize(
    "stderr",
    [
        "scancel: error: Kill job error on job id 20: Invalid job id specified",
        "scancel: error: Kill job error on job id 20: Job/step already completing or completed",
    ],
)
def test_cancelling_a_finished_job_is_not_an_error(stderr: str) -> None:
    sched, _ = scheduler({"scancel": fail(stderr)})
    sched.cancel(["20"])


def test_cancel_failure_raises() -> None:
    sched, _ = scheduler({"scancel": fail("scancel: error: Unable to contact slurm controller")})
    with pytest.raises(SchedulerError) as error:
        sched.cancel(["20"])
    assert error.value.transient


def test_find_by_name_asks_both_sources_and_keeps_exact_matches() -> None:
    sched, transport = scheduler(
        {
            "sacct": ok(recorded("sacct_find_by_name.stdout")),
            "squeue": ok(
                "31|N/A|PENDING|0|N/A|N/A|0:00|cpu=1|| Priority|hpcfleet-rec-find-1\n"
                "32|N/A|PENDING|0|N/A|N/A|0:00|cpu=1||Priority|hpcfleet-rec-find-10\n"
            ),
        }
    )
    found = sched.find_by_name("hpcfleet-rec-find-1")
    assert transport.commands[0] == find_by_name_command("hpcfleet-rec-find-1")
    # Two earlier jobs of that name (in sacct and squeue) and one just submitted.
    assert {s.job_id for s in found} == {"29", "53", "31"}


def test_find_by_name_matches_names_as_slurmdbd_stores_them() -> None:
    sacct = "7|COMPLETED|0:0|1|2|1||n|None|say `hi`\n"
    sched, _ = scheduler({"sacct": ok(sacct), "squeue": ok("")})
    assert [s.job_id for s in sched.find_by_name('say "hi"')] == ["7"]


def test_probes_parse_recorded_output() -> None:
    sched, transport = scheduler(
        {
            "--version": ok(recorded("versions.stdout")),
            "sinfo": ok(recorded("sinfo.stdout")),
            "sacctmgr": ok(recorded("sacctmgr_assoc.stdout")),
        }
    )
    assert sched.versions()["sbatch"] == "22.05.8"
    assert sched.partitions()["gpu"].gpus_per_node == 2
    assert {a.account for a in sched.associations()} == {"sandbox"}
    assert transport.commands[-1] == account_check_command("sandbox")


def test_tail_returns_the_file_end() -> None:
    sched, transport = scheduler({"tail": ok("last line\n")})
    assert sched.tail("/l/0 .err", 5) == "last line\n"
    assert transport.commands == [tail_command("/l/0 .err", 5)]
    assert shlex.split(transport.commands[0]) == ["tail", "-n", "5", "--", "/l/0 .err"]


@pytest.mark.parametrize("bad", ["1;reboot", "$(id)", "12 13", "", "12_", "_3"])
def test_commands_refuse_anything_but_job_ids(bad: str) -> None:
    for build in (status_command, cancel_command):
        with pytest.raises(ValueError):
            build([bad])


def test_live_answers_replace_recorded_ones_by_task_and_by_array() -> None:
    from registry.states import JobState
    from sites.scheduler import JobStatus
    from sites.slurm.scheduler import prefer_live

    def status(job_id: str, state: JobState) -> JobStatus:
        return JobStatus(job_id=job_id, state=state)

    # sacct: array 7 still one placeholder row, job 8 final; squeue: 7's tasks, 9 running.
    recorded = {"7": status("7", JobState.PENDING), "8": status("8", JobState.COMPLETED)}
    live = {
        "7_0": status("7_0", JobState.RUNNING),
        "7_1": status("7_1", JobState.PENDING),
        "9": status("9", JobState.RUNNING),
    }
    merged = prefer_live(recorded, live, ["7", "7_1", "8", "9"])  # overlapping ids are fine
    assert {k: v.state for k, v in merged.items()} == {
        "7_0": JobState.RUNNING,
        "7_1": JobState.PENDING,
        "8": JobState.COMPLETED,
        "9": JobState.RUNNING,
    }
    many = {
        f"{n}_{i}": status(f"{n}_{i}", JobState.RUNNING)
        for n in range(100, 150)
        for i in range(100)
    }
    assert len(prefer_live({}, many, [str(n) for n in range(100, 150)])) == 5000


def test_excluding_nodes_is_one_scontrol_update_for_all_queued_segments() -> None:
    sched, transport = scheduler({"scontrol update": ok()})
    sched.exclude_nodes(["30", "31"], ["site-a-n2", "site-a-n1"])
    assert transport.commands == ["scontrol update JobId=30,31 ExcNodeList=site-a-n1,site-a-n2"]


@pytest.mark.parametrize(
    "stderr_file",
    [
        "scontrol_update_one_started.stderr",
        "scontrol_update_finished.stderr",
        "scontrol_update_unknown_id.stderr",
    ],
)
def test_a_segment_that_left_the_queue_keeps_its_nodes_without_error(stderr_file: str) -> None:
    sched, _ = scheduler({"scontrol update": fail(recorded(stderr_file))})
    sched.exclude_nodes(["13", "14"], ["site-a-n2"])


def test_a_refused_exclusion_is_an_error_naming_scontrols_words() -> None:
    sched, _ = scheduler({"scontrol update": fail(recorded("scontrol_update_bad_node.stderr"))})
    with pytest.raises(SchedulerError, match="Invalid node name specified for job 11"):
        sched.exclude_nodes(["11"], ["nosuchnode"])


@pytest.mark.parametrize("node", ["a;reboot", "$(id)", "n1 n2", "n'1"])
def test_hostile_node_names_stay_one_quoted_argument(node: str) -> None:
    if " " in node:
        with pytest.raises(ValueError, match="not a node name"):
            exclude_nodes_command(["1"], [node])
        return
    command = exclude_nodes_command(["1"], [node])
    assert shlex.split(command) == ["scontrol", "update", "JobId=1", f"ExcNodeList={node}"]


def test_update_refusals_leave_out_jobs_that_left_the_queue() -> None:
    assert parse_update_refusals(0, "", "") == []
    started = recorded("scontrol_update_one_started.stderr")
    bad = recorded("scontrol_update_bad_node.stderr")
    assert parse_update_refusals(1, "", started) == []
    assert parse_update_refusals(1, "", started + bad) == [bad.strip()]
    assert parse_update_refusals(2, "", "") == ["scontrol update failed (exit 2)"]
