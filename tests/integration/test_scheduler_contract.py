"""The `Scheduler` contract (sites/scheduler.py), run against every scheduler.

Each test runs once per backend: `LocalScheduler` (jobs as local processes), and
`SlurmScheduler` on the sandbox's real SLURM cluster site-b, reached over SSH. A new
scheduler joins by adding a branch to the `site` fixture; what only one backend does
(slots, signals and time limits of local jobs; GPUs, probes, sites without accounting
on SLURM) is tested next to it, in test_local_scheduler.py and test_slurm_scheduler.py.

Jobs are `true`-sized and each test submits its jobs at once, so a test costs about
what the scheduler needs to start and settle one job (a second or so on SLURM). The
sandbox's sites live on this machine: a test reads job output from the request's own
paths, which are the same here and on the site.
"""

from __future__ import annotations

import shlex
import shutil
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
        after_not_ok: Sequence[str] = (),
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
            after_not_ok=tuple(after_not_ok),
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
def ssh_pool(slurm_sandbox: Sandbox) -> Iterator[ConnectionPool]:
    """One login for the whole module: `keeper` holds a share of the connection."""
    target = slurm_sandbox.site(SLURM_SITE)
    pool = ConnectionPool()
    keeper = SshTransport(target.name, ssh_settings(target), pool=pool)
    yield pool
    keeper.close()
    pool.close_all()


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    if request.param == "local":
        yield from _local_site(tmp_path)
    else:
        pool: ConnectionPool = request.getfixturevalue("ssh_pool")
        yield from _slurm_site(request.getfixturevalue("slurm_sandbox"), pool)


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
    opened: list[SshTransport] = []

    def connect() -> SshTransport:
        opened.append(SshTransport(target.name, ssh_settings(target), pool=pool))
        return opened[-1]

    def restart() -> Scheduler:
        return SlurmScheduler(target.name, connect(), SLURM_SETTINGS, Environment())

    transport = RecordingTransport(site=target.name, wrapped=connect())
    scheduler = SlurmScheduler(target.name, transport, SLURM_SETTINGS, Environment())
    site = Site("slurm", scheduler, restart, root, transport)
    try:
        yield site
    finally:
        if site.submitted:  # stop whatever a failed test left running
            scheduler.cancel(site.submitted)
        for each in opened:
            each.close()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- render


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


# --------------------------------------------------------------------------- submit, status


def test_one_status_call_reports_finished_jobs_and_leaves_out_unknown_ids(site: Site) -> None:
    done = site.request(script("pwd; echo oops >&2"), workdir="new dir/it's")
    failed = site.request(script("echo partial; exit 3"))
    done_id, failed_id = site.submit(done), site.submit(failed)
    site.settled([done_id, failed_id], 2)

    calls_before = len(site.transport.calls) if site.transport else 0
    statuses = site.scheduler.status([done_id, *UNKNOWN_IDS, failed_id])

    assert sorted(statuses) == sorted([done_id, failed_id])
    if site.transport is not None:
        assert len(site.transport.calls) == calls_before + 1  # ONE command for all ids
    ok, bad = statuses[done_id], statuses[failed_id]
    assert (ok.job_id, ok.state, ok.exit_code, ok.name) == (
        done_id, JobState.COMPLETED, 0, done.name,
    )  # fmt: skip
    assert ok.started is not None and ok.ended is not None and ok.started <= ok.ended
    assert (bad.job_id, bad.state, bad.exit_code) == (failed_id, JobState.FAILED, 3)
    # The job ran in its work dir, which submit created, and its output went to the logs.
    assert Path(done.stdout_path(0)).read_text() == f"{done.workdir}\n"
    assert Path(done.stderr_path(0)).read_text() == "oops\n"
    assert Path(failed.stdout_path(0)).read_text() == "partial\n"
    assert site.scheduler.status(list(UNKNOWN_IDS)) == {}
    assert site.scheduler.status([]) == {}


HOSTILE = ("$(touch canary)", "`touch canary`", "a; touch canary", "'q' \"qq\"", "${HOME}")


def test_array_tasks_are_id_underscore_index_and_get_their_values_literally(site: Site) -> None:
    array = site.request(
        TaskSpec(argv=("printf", "[%s]\n", *HOSTILE), env={"OWN": HOSTILE[0]}, array_value="a"),
        TaskSpec(
            script='printf "%s|%s|%s\\n" "$HPCFLEET_ARRAY_INDEX" "$OWN" "$SHARED"',
            env={"OWN": HOSTILE[3]},
            array_value=HOSTILE[1],
        ),
        env={"SHARED": "two words; $(touch canary)"},
        workdir="w 'q' \"d\" $(x)",
        name='hpcfleet-it\'s "a" $(touch canary) `touch canary`; #',
    )
    single = site.request(TaskSpec(argv=("true",), array_value="only"))

    array_id, single_id = site.submit(array), site.submit(single)
    statuses = site.settled([array_id, single_id], 3)

    assert sorted(statuses) == sorted([f"{array_id}_0", f"{array_id}_1", f"{single_id}_0"])
    assert {s.state for s in statuses.values()} == {JobState.COMPLETED}
    assert [statuses[f"{array_id}_{i}"].array_index for i in (0, 1)] == [0, 1]
    assert Path(array.stdout_path(0)).read_text() == "".join(f"[{a}]\n" for a in HOSTILE)
    assert Path(array.stdout_path(1)).read_text() == f"1|{HOSTILE[3]}|two words; $(touch canary)\n"
    assert not list(site.root.rglob("canary"))
    # One task, asked for alone.
    assert list(site.scheduler.status([f"{array_id}_1"])) == [f"{array_id}_1"]


# --------------------------------------------------------------------------- find by name


def test_a_new_scheduler_finds_every_job_by_its_exact_name(site: Site) -> None:
    name = f"hpcfleet-contract-{uuid.uuid4().hex[:8]}-eval-1"
    first = site.submit(site.request(script("true"), script("true"), name=name))
    # At once, as after a crash between submitting and recording the id.
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


def test_cancel_stops_running_jobs_and_arrays_and_is_harmless_after_the_end(site: Site) -> None:
    sleep = TaskSpec(argv=("sleep", "300"))
    plain, array = site.submit(site.request(sleep)), site.submit(site.request(sleep, sleep))
    done = site.submit(site.request(script("true")))
    site.reaches(plain, JobState.RUNNING)

    site.scheduler.cancel([plain, array])

    cancelled = site.settled([plain, array], 3)
    assert {s.state for s in cancelled.values()} == {JobState.CANCELLED}
    site.settled([done], 1)
    site.scheduler.cancel([plain, done])  # both have ended: nothing to do, no error
    site.restart().cancel([array])
    assert site.scheduler.status([done])[done].state is JobState.COMPLETED
    assert site.scheduler.status([plain])[plain].state is JobState.CANCELLED


# --------------------------------------------------------------------------- dependencies


def test_after_ok_waits_for_success_and_a_failure_cancels_the_dependent(site: Site) -> None:
    gated = site.request(script("while [ ! -e go ]; do sleep 0.05; done; echo first >> order"))
    first = site.submit(gated)
    second = site.submit(site.request(script("echo second >> order"), after_ok=[first]))
    failing = site.submit(site.request(script("exit 1")))
    orphan = site.request(script("touch ran"), after_ok=[failing])
    orphan_id = site.submit(orphan)
    site.reaches(first, JobState.RUNNING)

    # The first job cannot end before `go` exists, so the second must still wait.
    assert site.scheduler.status([second])[second].state is JobState.PENDING
    (Path(gated.workdir) / "go").touch()

    statuses = site.settled([first, second, failing, orphan_id], 4)
    assert statuses[first].state is statuses[second].state is JobState.COMPLETED
    assert (Path(gated.workdir) / "order").read_text() == "first\nsecond\n"
    ended, started = statuses[first].ended, statuses[second].started
    assert ended is not None and started is not None and ended <= started
    assert statuses[failing].state is JobState.FAILED
    assert statuses[orphan_id].state is JobState.CANCELLED
    assert not (Path(orphan.workdir) / "ran").exists()


def test_after_not_ok_runs_a_job_only_when_no_earlier_one_completed(site: Site) -> None:
    # A chain's segments (flows.segments): the second takes over from a first that did
    # not complete; the third, queued behind both, never runs once the second completed.
    gated = site.request(script("while [ ! -e go ]; do sleep 0.05; done; exit 3"))
    first = site.submit(gated)
    second_request = site.request(script("touch ran"), after_not_ok=[first], workdir="second")
    second = site.submit(second_request)
    third_request = site.request(script("touch ran"), after_not_ok=[first, second], workdir="third")
    third = site.submit(third_request)
    node = site.reaches(first, JobState.RUNNING).node or "localhost"

    # Waiting segments can be kept off a node and let back on; a running one keeps its.
    site.scheduler.exclude_nodes([first, second, third], [node])
    if site.transport is not None:  # SLURM: slurmctld holds the exclusion
        shown = site.transport.run(f"scontrol show job {second}").stdout
        assert f"ExcNodeList={node}" in shown
    site.scheduler.exclude_nodes([second, third], [])
    assert site.scheduler.status([second])[second].state is JobState.PENDING
    (Path(gated.workdir) / "go").touch()

    statuses = site.settled([first, second, third], 3)
    assert statuses[first].state is JobState.FAILED
    assert statuses[second].state is JobState.COMPLETED
    assert (Path(second_request.workdir) / "ran").exists()
    assert statuses[third].state is JobState.CANCELLED
    assert not (Path(third_request.workdir) / "ran").exists()
