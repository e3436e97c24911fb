"""Local state is owner-only whatever the umask: the local scheduler's job scripts
(which hold env values), its job and log directories, what its jobs write; and the
embedded default's HPCFLEET_HOME with its databases and artifacts."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.owner_only import secure_home
from registry.site import Environment
from registry.states import JobState
from registry.store import Store
from sites.local.runner import jobs_dir
from sites.local.scheduler import LocalScheduler
from sites.scheduler import JobRequest, TaskSpec

pytestmark = pytest.mark.timeout(300)  # MLflow imports slowly on a busy machine


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most machines give their users: files 0644, directories 0755."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):o}"


def run_job(scheduler: LocalScheduler, root: Path) -> JobRequest:
    job = JobRequest(
        name="hpcfleet-r1-s-1",
        workdir=str(root / "run" / "work"),
        log_dir=str(root / "run" / "logs"),
        tasks=(TaskSpec(script="echo result > made.txt; echo done"),),
        env={"HF_TOKEN": "hf_not_for_others"},
    )
    (root / "run" / "work").mkdir(parents=True)
    job_id = scheduler.submit(job)
    deadline = time.monotonic() + 30
    while not all(s.state.is_final for s in scheduler.status([job_id]).values()):
        assert time.monotonic() < deadline, "job did not end in time"
        time.sleep(0.05)
    assert scheduler.status([job_id])[job_id].state is JobState.COMPLETED
    return job


def test_local_jobs_write_owner_only(tmp_path: Path) -> None:
    scheduler = LocalScheduler("here", tmp_path / "site")
    job = run_job(scheduler, tmp_path)
    jobdir = jobs_dir(scheduler.state_dir) / "1"
    found = {
        "state dir": mode(scheduler.state_dir),
        "job dir": mode(jobdir),
        "script": mode(jobdir / "script.sh"),
        "log dir": mode(Path(job.log_dir)),
        "stdout": mode(Path(job.stdout_path(0))),
        "stderr": mode(Path(job.stderr_path(0))),
        "made by the job": mode(Path(job.workdir) / "made.txt"),
    }
    assert "hf_not_for_others" in (jobdir / "script.sh").read_text()
    assert found == {
        "state dir": "700",
        "job dir": "700",
        "script": "600",
        "log dir": "700",
        "stdout": "600",
        "stderr": "600",
        "made by the job": "600",
    }
    names = next((scheduler.state_dir / "names").iterdir())
    assert (mode(names.parent), mode(names)) == ("700", "600")


def test_a_site_umask_applies_to_what_local_jobs_write(tmp_path: Path) -> None:
    job = run_job(LocalScheduler("here", tmp_path / "site", environment=Environment(umask="027")), tmp_path)
    assert mode(Path(job.stdout_path(0))) == "640"
    assert mode(Path(job.workdir) / "made.txt") == "640"


def test_a_new_home_and_its_stores_are_owner_only(tmp_path: Path) -> None:
    from flows.tracking import Tracker

    home = tmp_path / "home"
    assert secure_home(home) is None
    Store.open(f"sqlite:///{home / 'registry.db'}").close()
    tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}", (home / "mlartifacts").as_uri())
    tracker.experiment_id("perms")
    modes = {p.name: mode(p) for p in (home, *home.iterdir())}
    # SQLite's -wal and -shm files come and go with the connections; they are 0600 too.
    assert modes == {
        "home": "700",
        "registry.db": "600",
        "registry.db.migrate.lock": "600",
        "mlflow.db": "600",
        "mlartifacts": "700",
    } | {name: "600" for name in modes if name.endswith(("-wal", "-shm"))}


def test_an_existing_open_home_is_made_owner_only_with_a_notice(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "registry.db").write_bytes(b"")
    (home / "notes.txt").write_text("the user's own file")
    notice = secure_home(home)
    assert notice is not None and str(home) in notice and "registry.db 644->600" in notice
    assert len(notice.splitlines()) == 1
    assert [mode(home), mode(home / "logs"), mode(home / "registry.db")] == ["700", "700", "600"]
    assert mode(home / "notes.txt") == "644"  # not ours to change; unreachable behind 0700
    assert secure_home(home) is None


def test_entries_opened_behind_an_owner_only_home_are_closed_silently(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert secure_home(home) is None
    (home / "prefect").mkdir()  # Prefect makes its home under the umask: 0755
    assert secure_home(home) is None
    assert mode(home / "prefect") == "700"
