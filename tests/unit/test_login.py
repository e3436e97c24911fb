"""`where: login` stages, the pure parts: the stage and site fields, the request, the
wrapper and commands of `sites.login.commands` and their parsers, routing by id, and
the environment a login task sees (online) next to a batch job's (offline)."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.chains import chainable_stages
from flows.dry_run import DryRun, PlannedJob, format_dry_run
from flows.jobs import build_request
from flows.layout import StageLayout
from flows.planning import StagePlan, fit
from registry.runspec import RunSpec, Stage
from registry.site import Environment, Site
from registry.states import JobState
from sites.driver import render_job_script
from sites.jobscript import OFFLINE_ENV
from sites.login.commands import (
    BadLoginOutput,
    LoginState,
    cancel_command,
    find_by_name_command,
    parse_found_ids,
    parse_status,
    parse_submit,
    render_wrapper,
    settle,
    status_command,
    submit_command,
)
from sites.login.scheduler import render_login_script
from sites.routing import WhereScheduler
from sites.scheduler import JobRequest, JobResources, JobStatus, TaskSpec, job_id_order
from sites.slurm.script import render_sbatch
from tests.helpers import local_site

HOSTILE = "/scratch/my dir/$(touch canary)/it's"


def login_stage(**fields: object) -> dict[str, object]:
    return {"name": "download", "site": "a", "where": "login", "command": ["true"], **fields}


# --------------------------------------------------------------------------- documents


def test_a_stage_runs_as_a_batch_job_unless_it_says_login() -> None:
    assert Stage.model_validate({"name": "s", "site": "a", "command": ["true"]}).where == "batch"
    stage = Stage.model_validate(login_stage(resources={"time": "00:20:00"}))
    assert (stage.where, stage.resources.time) == ("login", 1200)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"resources": {"gpus": 1}}, "resources.gpus"),
        ({"resources": {"nodes": 2, "time": "00:01:00"}}, "resources.nodes"),
        ({"resources": {"qos": "debug"}}, "resources.qos"),
        ({"resources": {"partition": "cpu"}}, "resources.partition"),
        ({"resources": {"cpus": 2}}, "resources.cpus"),
        ({"resources": {"mem": "all"}}, "resources.mem"),
        ({"array": {"language": ["fi", "cs"]}}, "array"),
        ({"launcher": "srun"}, "launcher"),
    ],
)
def test_a_login_stage_refuses_batch_resources_naming_the_field(
    fields: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Stage.model_validate(login_stage(**fields))
    message = str(caught.value)
    assert f"takes no {named}" in message and "only resources.time" in message


def test_a_stored_login_stage_reads_back() -> None:
    spec = RunSpec.model_validate({"name": "r", "stages": [login_stage()]})
    again = RunSpec.model_validate(spec.model_dump())  # the store keeps every field
    assert again.stage("download").where == "login"


def test_where_takes_batch_or_login() -> None:
    with pytest.raises(ValidationError, match="'batch' or 'login'"):
        Stage.model_validate(login_stage(where="compute"))


def test_login_tasks_defaults_to_one_and_is_bounded() -> None:
    assert local_site("a", "p").policy.login_tasks == 1
    assert local_site("a", "p", policy={"login_tasks": 3}).policy.login_tasks == 3
    for bad in (0, 9):
        with pytest.raises(ValidationError, match="login_tasks"):
            local_site("a", "p", policy={"login_tasks": bad})


def test_the_request_of_a_login_stage_asks_for_its_time_limit_only() -> None:
    spec = RunSpec.model_validate(
        {"name": "r", "stages": [login_stage(resources={"time": "00:02:00"})]}
    )
    request = build_request(
        spec,
        spec.stage("download"),
        local_site("a", "p"),
        run_id="abcd",
        attempt=1,
        layout=StageLayout("/w", "abcd", "download"),
        partition="cpu",
        qos="normal",
    )
    assert request.where == "login"
    assert request.resources == JobResources(time_seconds=120)


def test_login_stages_are_never_chained_with_afterok() -> None:
    spec = RunSpec.model_validate(
        {
            "name": "r",
            "stages": [
                login_stage(),
                {"name": "train", "site": "a", "command": ["true"], "needs": ["download"]},
                login_stage(name="again", needs=["train"]),
            ],
        }
    )
    plans = {s: StagePlan(s, ("a",), {"a": None}, "named") for s in ("download", "train", "again")}
    assert chainable_stages(spec, plans) == set()


# --------------------------------------------------------------------------- environment


def slurm_site(**environment: object) -> Site:
    return Site.model_validate(
        {
            "name": "s",
            "partner": "p",
            "scheduler": "slurm",
            "slurm": {"partitions": [{"name": "cpu", "default": True}]},
            "environment": environment,
        }
    )


def request(where: str = "login", **fields: object) -> JobRequest:
    values: dict[str, object] = {
        "name": "hpcfleet-abcd-download-1",
        "workdir": "/w/work",
        "tasks": (TaskSpec(argv=("huggingface-cli", "download", "it's")),),
        "log_dir": "/w/logs",
        "resources": JobResources(time_seconds=60),
        "where": where,
        **fields,
    }
    return JobRequest(**values)  # type: ignore[arg-type]


def test_offline_sites_batch_jobs_are_offline_and_login_tasks_are_not() -> None:
    site = slurm_site(offline=True, env={"HF_HOME": "/scratch/hf"})
    assert site.slurm is not None
    batch = render_sbatch(request("batch"), site.slurm, site.environment)
    login = render_job_script(site, request("login"), "/w")
    for name, value in OFFLINE_ENV.items():
        assert f"export {name}={value}" in batch
        assert name not in login
    assert 'export HF_HOME="/scratch/hf"' in login  # the rest of the site's environment stays
    assert "#SBATCH" not in login and "login-node task" in login


def test_a_login_script_runs_one_command() -> None:
    two = (TaskSpec(argv=("a",), array_value="x"), TaskSpec(argv=("b",), array_value="y"))
    with pytest.raises(ValueError, match="not an array"):
        render_login_script(request(tasks=two), Environment())


# --------------------------------------------------------------------------- commands


def test_the_wrapper_quotes_every_path_and_is_valid_sh() -> None:
    wrapper = render_wrapper(
        root=HOSTILE, stdout=HOSTILE + "/0.out", stderr=HOSTILE + "/0.err", time_seconds=90, slots=2
    )
    assert f"root={shlex.quote(HOSTILE)}\n" in wrapper
    assert f"out={shlex.quote(HOSTILE + '/0.out')}\n" in wrapper
    assert "limit=90\n" in wrapper and "slots=2\n" in wrapper
    assert subprocess.run(["sh", "-n"], input=wrapper, text=True).returncode == 0
    with pytest.raises(ValueError):
        render_wrapper(root="/r", stdout="/o", stderr="/e", time_seconds=0, slots=1)


def test_the_submit_command_quotes_its_values_and_refuses_a_two_line_name() -> None:
    command = submit_command(
        root=HOSTILE, name="n'1", wrapper="#!/bin/sh\n", log_dir=HOSTILE, workdir="/w", umask="077"
    )
    assert shlex.quote(HOSTILE + "/jobs") in command and shlex.quote("n'1") in command
    assert subprocess.run(["sh", "-n", "-c", command]).returncode == 0
    with pytest.raises(ValueError, match="one line"):
        submit_command(root="/r", name="a\nb", wrapper="", log_dir="/l", workdir="/w", umask="077")


def test_parse_submit_takes_only_a_login_id() -> None:
    assert parse_submit(0, "L12\n", "") == "L12"
    with pytest.raises(BadLoginOutput, match="Permission denied"):
        parse_submit(1, "", "mkdir: Permission denied")
    with pytest.raises(BadLoginOutput):
        parse_submit(0, "12\n", "")  # a SLURM id is not ours


@pytest.mark.parametrize("bad", ["L1; rm -rf ~", "12", "L0", "../L1", ""])
def test_commands_refuse_what_is_not_a_login_id(bad: str) -> None:
    for build in (status_command, cancel_command):
        with pytest.raises(ValueError, match="not a login task id"):
            build("/r", ["L1", bad])


def test_find_by_name_matches_whole_lines_of_a_quoted_name() -> None:
    command = find_by_name_command("/r", "hpcfleet-a-b-1; reboot")
    assert "grep -lxF -e 'hpcfleet-a-b-1; reboot'" in command
    assert parse_found_ids("L3\nL10\n../x\nL1 2\n") == ["L3", "L10", "L1"]


STATUS = """@@ L1
alive=0
checked=4241
name=hpcfleet-abcd-download-1
state=COMPLETED
exit=0
started=1764633600
ended=1764633660
pgid=4242
host=login1
runner=4241
reason=
@@ L2
alive=1
checked=4300
name=hpcfleet-abcd-second-1
state=PENDING
exit=
started=
ended=
pgid=
host=login1
runner=4300
reason=waiting for a login slot
@@ L9
alive=1
name=not asked for
state=RUNNING
@@ L3
@@ site
here=login1
now=1764633700
"""


def test_parse_status_reads_asked_tasks_and_the_login_node() -> None:
    tasks, here, now = parse_status(STATUS, ["L1", "L2", "L3"])
    assert sorted(tasks) == ["L1", "L2"]  # L3 has no state file, L9 was not asked for
    done = tasks["L1"]
    assert (done.state, done.exit_code, done.host, done.name) == (
        JobState.COMPLETED,
        0,
        "login1",
        "hpcfleet-abcd-download-1",
    )
    assert done.started == datetime(2025, 12, 2, tzinfo=UTC)
    assert (done.ended - done.started).total_seconds() == 60  # type: ignore[operator]
    assert tasks["L2"].reason == "waiting for a login slot" and tasks["L2"].runner_alive
    assert here == "login1" and now == datetime.fromtimestamp(1764633700, UTC)


def test_liveness_counts_only_for_the_wrapper_that_was_checked() -> None:
    # The wrapper's first write landed between the check (no runner yet) and the read.
    text = "@@ L1\nalive=0\nchecked=\nstate=PENDING\nrunner=77\nhost=login1\n"
    tasks, _, _ = parse_status(text, ["L1"])
    assert settle(tasks["L1"], "login1", NOW) == (JobState.PENDING, None)
    text = text.replace("checked=\n", "checked=77\n")
    tasks, _, _ = parse_status(text, ["L1"])
    assert settle(tasks["L1"], "login1", NOW)[0] is JobState.NODE_FAIL


@pytest.mark.parametrize("line", ["state=RUNNING; rm", "state=", "started=yesterday", "exit=-1"])
def test_parse_status_refuses_what_the_wrapper_never_writes(line: str) -> None:
    key = line.split("=")[0]
    text = f"@@ L1\nalive=1\n{line}\n" + ("" if key == "state" else "state=RUNNING\n")
    with pytest.raises(BadLoginOutput):
        parse_status(text, ["L1"])


def task(state: JobState, **fields: object) -> LoginState:
    values: dict[str, object] = {"job_id": "L1", "state": state, "host": "login1", **fields}
    return LoginState(**values)  # type: ignore[arg-type]


NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_settle_trusts_final_and_live_tasks() -> None:
    assert settle(task(JobState.TIMEOUT, reason="time"), "login1", NOW) == (
        JobState.TIMEOUT,
        "time",
    )
    running = task(JobState.RUNNING, has_runner=True, runner_alive=True)
    assert settle(running, "login1", NOW) == (JobState.RUNNING, None)


def test_a_task_whose_wrapper_is_gone_is_a_node_failure() -> None:
    gone = task(JobState.RUNNING, has_runner=True, runner_alive=False)
    assert settle(gone, "login1", NOW) == (JobState.NODE_FAIL, "login runner vanished")


def test_on_another_login_node_the_recorded_state_stands() -> None:
    elsewhere = task(JobState.RUNNING, has_runner=True, runner_alive=False)
    state, reason = settle(elsewhere, "login2", NOW)
    assert state is JobState.RUNNING and "on login node login1" in (reason or "")


def test_a_wrapper_that_never_started_fails_after_a_grace() -> None:
    young = task(JobState.PENDING, submitted=datetime(2026, 12, 2, 11, 59, 30, tzinfo=UTC))
    old = task(JobState.PENDING, submitted=datetime(2026, 12, 2, 11, 50, tzinfo=UTC))
    assert settle(young, "login1", NOW)[0] is JobState.PENDING
    assert settle(old, "login1", NOW) == (JobState.NODE_FAIL, "login runner never started")


# --------------------------------------------------------------------------- routing


class Recorder:
    """A scheduler that records what it was asked (routing is all that is tested)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.calls: list[tuple[str, object]] = []

    def render(self, request: JobRequest) -> str:
        return self.prefix

    def submit(self, request: JobRequest) -> str:
        self.calls.append(("submit", request.name))
        return f"{self.prefix}1"

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        self.calls.append(("status", list(job_ids)))
        return {j: JobStatus(j, JobState.RUNNING) for j in job_ids}

    def cancel(self, job_ids: Sequence[str]) -> None:
        self.calls.append(("cancel", list(job_ids)))

    def find_by_name(self, name: str) -> list[JobStatus]:
        self.calls.append(("find", name))
        return [JobStatus(f"{self.prefix}1", JobState.RUNNING, name=name)]


def test_requests_go_where_they_say_and_ids_to_whoever_made_them() -> None:
    batch, login = Recorder(""), Recorder("L")
    router = WhereScheduler(batch, login, is_login_id=lambda j: j.startswith("L"))
    assert router.submit(request("login")) == "L1" and router.submit(request("batch")) == "1"
    assert router.render(request("login")) == "L"
    assert sorted(router.status(["5", "L2", "6_1"])) == ["5", "6_1", "L2"]
    router.cancel(["L2"])
    assert [j.job_id for j in router.find_by_name("n")] == ["1", "L1"]
    assert batch.calls == [
        ("submit", "hpcfleet-abcd-download-1"),
        ("status", ["5", "6_1"]),
        ("find", "n"),
    ]
    assert login.calls == [
        ("submit", "hpcfleet-abcd-download-1"),
        ("status", ["L2"]),
        ("cancel", ["L2"]),
        ("find", "n"),
    ]


def test_a_poll_without_login_tasks_asks_the_batch_scheduler_alone() -> None:
    batch, login = Recorder(""), Recorder("L")
    WhereScheduler(batch, login, is_login_id=lambda j: j.startswith("L")).status(["5"])
    assert login.calls == []


def test_one_id_space_when_both_share_their_files() -> None:
    batch, login = Recorder(""), Recorder("L")
    router = WhereScheduler(batch, login, is_login_id=None)
    router.status(["3"])
    router.find_by_name("n")
    assert login.calls == [] and len(batch.calls) == 2


def test_job_ids_sort_in_submission_order_per_kind() -> None:
    assert sorted(["L10", "L9", "L2"], key=job_id_order) == ["L2", "L9", "L10"]
    assert max(["99", "100"], key=job_id_order) == "100"


def test_a_login_stage_fits_a_site_whatever_its_partitions_allow() -> None:
    site = Site.model_validate(
        {
            "name": "s",
            "partner": "p",
            "scheduler": "slurm",
            "slurm": {"partitions": [{"name": "cpu", "default": True, "max_time": "00:30:00"}]},
        }
    )
    long = Stage.model_validate(login_stage(resources={"time": "02:00:00"}))
    assert fit(long, site) == (None, None)  # no partition: the login node
    two_hours = {"resources": {"time": "02:00:00"}}
    batch = Stage.model_validate({"name": "b", "site": "s", "command": ["true"], **two_hours})
    assert fit(batch, site)[0] is None and fit(batch, site)[1]  # refused, with a reason


def test_submitting_without_setsid_or_flock_says_what_is_missing(tmp_path: Path) -> None:
    command = submit_command(
        root=str(tmp_path / "r"), name="n", wrapper="", log_dir="/l", workdir="/w", umask="077"
    )
    done = subprocess.run(
        ["/bin/bash", "-c", command], env={"PATH": str(tmp_path)}, capture_output=True, text=True
    )
    with pytest.raises(BadLoginOutput, match="setsid not found on the login node"):
        parse_submit(done.returncode, done.stdout, done.stderr)
    assert not (tmp_path / "r").exists()  # nothing was made


def test_dry_run_shows_a_login_stage_as_a_login_node_script() -> None:
    job = PlannedJob("download", "lumi", None, None, "named in the spec: lumi", "#!/bin/bash\n")
    text = format_dry_run(DryRun([replace(job, login=True)], []), Path("run.yaml"))
    assert "== stage download: site lumi\n" in text
    assert "--- login-node script (lumi) ---" in text and "batch script" not in text
    assert "--- batch script (lumi) ---" in format_dry_run(DryRun([job], []), Path("run.yaml"))
