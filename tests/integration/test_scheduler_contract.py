"""The `Scheduler` contract (sites/scheduler.py), run against every scheduler.

Each test runs once per backend: `LocalScheduler` (jobs as local processes), and
`SlurmScheduler` on the sandbox's real SLURM cluster site-b, reached over SSH. A new
scheduler joins by adding a branch to the `site` fixture; what only one backend does
(slots, signals and time limits of local jobs; GPUs, probes, sites without accounting
on SLURM) is tested next to it, in test_local_scheduler.py and test_slurm_scheduler.py.

Jobs are `true`-sized, so a test costs what the scheduler needs to start and settle a
job (about a second on SLURM). The sandbox's sites live on this machine: job output is
read from `Site.view`, the work directories as this process sees them.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from registry.site import Environment, Partition, SlurmSettings
from registry.states import JobState
from sites.local.runner import jobs_dir
from sites.local.scheduler import LocalScheduler
from sites.scheduler import JobRequest, JobResources, JobStatus, Scheduler, TaskSpec
from sites.slurm.scheduler import SlurmScheduler
from sites.ssh.transport import ConnectionPool, SshTransport
from tests.doubles import RecordingTransport
from tests.helpers import wait_until
from tests.sandbox.documents import ssh_settings
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.timeout(180)

SLURM_SITE = "site-b"
SLURM_SETTINGS = SlurmSettings(
    account="sandbox",
    partitions=[Partition(name="cpu", default=True), Partition(name="gpu", gpus_per_node=2)],
)
# Bounds a hung scheduler only; sacct lags slurmctld by a few seconds.
SETTLE_SECONDS = 90.0
UNKNOWN_IDS = ("987654321", "987654321_0")


@dataclass
class Site:
    """A scheduler under test, and a fresh directory for its jobs' files."""

    backend: str
    scheduler: Scheduler
    restart: Callable[[], Scheduler]  # a new scheduler object for the same site
    root: Path  # absolute, on the site and (the same path) on this machine
    transport: RecordingTransport | None = None  # what reached the site, if anything
    submitted: list[str] = field(default_factory=list)

    def request(
        self,
        *tasks: TaskSpec,
        name: str | None = None,
        after_ok: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        workdir: str = "work",
    ) -> JobRequest:
        """A job whose work dir (not yet created) and logs live under `root`."""
        tag = uuid.uuid4().hex[:8]
        return JobRequest(
            name=name or f"hpcfleet-contract-{tag}-stage-1",
            workdir=str(self.root / workdir),
            tasks=tasks,
            env=env or {},
            resources=JobResources(time_seconds=300),
            log_dir=str(self.root / "logs" / tag),
            after_ok=tuple(after_ok),
        )

    def submit(self, request: JobRequest) -> str:
        job_id = self.scheduler.submit(request)
        self.submitted.append(job_id)
        return job_id

    def settled(self, job_ids: Sequence[str], count: int) -> dict[str, JobStatus]:
        """Statuses once `count` tasks of `job_ids` are reported, all final."""
        seen: dict[str, JobStatus] = {}

        def final() -> bool:
            seen.clear()
            seen.update(self.scheduler.status(job_ids))
            return len(seen) == count and all(s.state.is_final for s in seen.values())

        wait_until(final, timeout=SETTLE_SECONDS)
        return seen

    def reaches(self, job_id: str, state: JobState) -> JobStatus:
        """The job's status once it is in `state`."""
        seen: list[JobStatus] = []

        def reached() -> bool:
            status = self.scheduler.status([job_id]).get(job_id)
            seen[:] = [status] if status is not None else []
            return status is not None and status.state is state

        wait_until(reached, timeout=SETTLE_SECONDS)
        return seen[0]


def script(text: str) -> TaskSpec:
    return TaskSpec(script=text)


@pytest.fixture(scope="module")
def ssh_pool() -> Iterator[ConnectionPool]:
    """One login for the whole module."""
    pool = ConnectionPool()
    yield pool
    pool.close_all()


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    if request.param == "local":
        yield from _local_site(tmp_path)
    else:
        sandbox: Sandbox = request.getfixturevalue("slurm_sandbox")
        yield from _slurm_site(sandbox, request.getfixturevalue("ssh_pool"))


def _local_site(tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "site"

    def restart() -> Scheduler:
        return LocalScheduler("laptop", root, slots=4)

    scheduler = LocalScheduler("laptop", root, slots=4)
    site = Site("local", scheduler, restart, root)
    yield site
    jobs = jobs_dir(scheduler.state_dir)
    if jobs.exists():  # stop whatever a failed test left running
        scheduler.cancel([p.name for p in jobs.iterdir() if p.name.isdigit()])


def _slurm_site(sandbox: Sandbox, pool: ConnectionPool) -> Iterator[Site]:
    target = sandbox.site(SLURM_SITE)
    root = target.home / "scheduler-contract" / uuid.uuid4().hex[:12]
    ssh = SshTransport(target.name, ssh_settings(target), pool=pool)
    transport = RecordingTransport(site=target.name, wrapped=ssh)

    def restart() -> Scheduler:
        fresh = SshTransport(target.name, ssh_settings(target), pool=pool)
        return SlurmScheduler(target.name, fresh, SLURM_SETTINGS, Environment())

    scheduler = SlurmScheduler(target.name, transport, SLURM_SETTINGS, Environment())
    site = Site("slurm", scheduler, restart, root, transport)
    try:
        yield site
    finally:
        if site.submitted:  # stop whatever a failed test left running
            scheduler.cancel(site.submitted)
        transport.close()
        sandbox.run_on(target, ["rm", "-rf", "--", str(root)])


# --------------------------------------------------------------------------- render, submit


def test_render_is_pure_and_names_the_job(site: Site) -> None:
    request = site.request(TaskSpec(argv=("echo", "it's here")))

    first, second = site.scheduler.render(request), site.scheduler.render(request)

    assert first == second
    assert first.startswith("#!/bin/bash\n")
    assert request.name in first
    assert shlex.join(["echo", "it's here"]) in first
    assert not site.root.exists()  # nothing was written
    if site.transport is not None:
        assert site.transport.commands == []  # nothing was sent


def test_a_job_runs_in_its_new_workdir_and_completes(site: Site) -> None:
    request = site.request(script("pwd; echo oops >&2"))

    job_id = site.submit(request)
    status = site.settled([job_id], 1)[job_id]

    assert (status.job_id, status.state, status.exit_code) == (job_id, JobState.COMPLETED, 0)
    assert status.name == request.name
    assert status.started is not None and status.ended is not None
    assert status.started <= status.ended
    assert Path(request.stdout_path(0)).read_text() == f"{request.workdir}\n"
    assert Path(request.stderr_path(0)).read_text() == "oops\n"


def test_an_array_reports_each_task_as_id_underscore_index(site: Site) -> None:
    show = 'echo "$HPCFLEET_ARRAY_INDEX $LANGUAGE"'
    array = site.request(
        *(
            TaskSpec(script=show, env={"LANGUAGE": lang}, array_value=lang)
            for lang in ["fi", "cs", "de"]
        )
    )
    single = site.request(TaskSpec(argv=("true",), array_value="only"))

    array_id, single_id = site.submit(array), site.submit(single)
    statuses = site.settled([array_id, single_id], 4)

    assert sorted(statuses) == sorted(
        [f"{array_id}_0", f"{array_id}_1", f"{array_id}_2", f"{single_id}_0"]
    )
    assert all(s.state is JobState.COMPLETED for s in statuses.values())
    assert [statuses[f"{array_id}_{i}"].array_index for i in range(3)] == [0, 1, 2]
    outputs = [Path(array.stdout_path(i)).read_text() for i in range(3)]
    assert outputs == ["0 fi\n", "1 cs\n", "2 de\n"]


def test_a_failing_job_is_failed_with_its_exit_code(site: Site) -> None:
    request = site.request(script("echo partial; echo oops >&2; exit 3"))

    job_id = site.submit(request)
    status = site.settled([job_id], 1)[job_id]

    assert (status.state, status.exit_code) == (JobState.FAILED, 3)
    assert Path(request.stdout_path(0)).read_text() == "partial\n"
    assert Path(request.stderr_path(0)).read_text() == "oops\n"


def test_quoted_values_reach_the_job_literally(site: Site) -> None:
    hostile = ("$(touch canary)", "`touch canary`", "a; touch canary", "'q' \"qq\"", "${HOME}")
    request = site.request(
        TaskSpec(
            argv=("printf", "[%s]\n", *hostile), env={"OWN": hostile[0]}, array_value=hostile[1]
        ),
        script('printf "%s|%s\\n" "$SHARED" "${OWN:-unset}"'),
        env={"SHARED": "two words; $(touch canary)"},
        workdir="w 'q' \"d\" $(x)",
        name='it\'s "a" $(touch canary) `touch canary`; #',
    )

    job_id = site.submit(request)
    statuses = site.settled([job_id], 2)

    assert all(s.state is JobState.COMPLETED for s in statuses.values()), statuses
    assert Path(request.stdout_path(0)).read_text() == "".join(f"[{a}]\n" for a in hostile)
    assert Path(request.stdout_path(1)).read_text() == "two words; $(touch canary)|unset\n"
    assert Path(request.workdir).is_dir()
    assert not list(site.root.rglob("canary"))


# --------------------------------------------------------------------------- status


def test_one_status_call_reports_many_jobs_and_leaves_out_unknown_ids(site: Site) -> None:
    ok = site.submit(site.request(script("true")))
    failed = site.submit(site.request(script("exit 4")))
    array = site.submit(site.request(script("true"), script("true")))
    site.settled([ok, failed, array], 4)

    calls_before = len(site.transport.calls) if site.transport else 0
    statuses = site.scheduler.status([ok, *UNKNOWN_IDS, failed, array])

    assert sorted(statuses) == sorted([ok, failed, f"{array}_0", f"{array}_1"])
    assert {k: s.job_id for k, s in statuses.items()} == {k: k for k in statuses}
    assert (statuses[ok].state, statuses[ok].exit_code) == (JobState.COMPLETED, 0)
    assert (statuses[failed].state, statuses[failed].exit_code) == (JobState.FAILED, 4)
    if site.transport is not None:
        assert len(site.transport.calls) == calls_before + 1  # ONE command for all of them
    assert site.scheduler.status(list(UNKNOWN_IDS)) == {}
    assert site.scheduler.status([]) == {}


def test_a_task_of_an_array_can_be_asked_for_alone(site: Site) -> None:
    array = site.submit(site.request(script("true"), script("exit 2")))
    site.settled([array], 2)

    statuses = site.scheduler.status([f"{array}_1"])

    assert list(statuses) == [f"{array}_1"]
    assert (statuses[f"{array}_1"].state, statuses[f"{array}_1"].exit_code) == (JobState.FAILED, 2)


# --------------------------------------------------------------------------- find by name


def test_a_new_scheduler_finds_every_job_by_its_exact_name(site: Site) -> None:
    name = f"hpcfleet-contract-{uuid.uuid4().hex[:8]}-eval-1"
    first = site.submit(site.request(script("true"), script("true"), name=name))
    # Right after submit, as after a crash between submitting and recording the id.
    found_at_once = site.restart().find_by_name(name)
    assert sorted(s.job_id for s in found_at_once) == [f"{first}_0", f"{first}_1"]
    other = site.submit(site.request(script("true"), name=name + "0"))
    second = site.submit(site.request(script("true"), name=name))
    site.settled([first, other, second], 4)

    found = site.restart().find_by_name(name)

    assert sorted(s.job_id for s in found) == sorted([f"{first}_0", f"{first}_1", second])
    assert all(s.name == name and s.state is JobState.COMPLETED for s in found)
    assert site.restart().find_by_name(name + "-never-submitted") == []


# --------------------------------------------------------------------------- cancel


def test_cancel_stops_a_running_job_and_is_harmless_after_the_end(site: Site) -> None:
    running = site.submit(site.request(TaskSpec(argv=("sleep", "300"))))
    done = site.submit(site.request(script("true")))
    site.reaches(running, JobState.RUNNING)

    site.scheduler.cancel([running])

    assert site.settled([running], 1)[running].state is JobState.CANCELLED
    site.settled([done], 1)
    site.scheduler.cancel([running, done])  # both have ended: nothing to do, no error
    site.restart().cancel([running])
    assert site.scheduler.status([done])[done].state is JobState.COMPLETED
    assert site.scheduler.status([running])[running].state is JobState.CANCELLED


def test_cancelling_an_array_cancels_every_task(site: Site) -> None:
    array = site.submit(
        site.request(TaskSpec(argv=("sleep", "300")), TaskSpec(argv=("sleep", "300")))
    )
    site.reaches(f"{array}_0", JobState.RUNNING)

    site.scheduler.cancel([array])

    statuses = site.settled([array], 2)
    assert {s.state for s in statuses.values()} == {JobState.CANCELLED}


# --------------------------------------------------------------------------- dependencies


def test_after_ok_waits_for_the_dependency_to_complete(site: Site) -> None:
    first_request = site.request(
        script("while [ ! -e go ]; do sleep 0.05; done; echo first >> order")
    )
    first = site.submit(first_request)
    second = site.submit(site.request(script("echo second >> order"), after_ok=[first]))
    site.reaches(first, JobState.RUNNING)

    # The first job cannot end before `go` exists, so the second must still wait.
    assert site.scheduler.status([second])[second].state is JobState.PENDING
    (Path(first_request.workdir) / "go").touch()

    statuses = site.settled([first, second], 2)
    assert statuses[first].state is statuses[second].state is JobState.COMPLETED
    assert (Path(first_request.workdir) / "order").read_text() == "first\nsecond\n"
    ended, started = statuses[first].ended, statuses[second].started
    assert ended is not None and started is not None and ended <= started


def test_after_ok_on_a_failed_job_cancels_the_dependent_unrun(site: Site) -> None:
    first = site.submit(site.request(script("exit 1")))
    dependent = site.request(script("touch ran"), after_ok=[first])
    second = site.submit(dependent)

    status = site.settled([second], 1)[second]

    assert site.scheduler.status([first])[first].state is JobState.FAILED
    assert status.state is JobState.CANCELLED
    assert not (Path(dependent.workdir) / "ran").exists()
