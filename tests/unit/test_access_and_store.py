"""Access rules and store round-trips (SQLite file; PostgreSQL in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.errors import AccessDenied, NotFoundError
from registry.milestone import Milestone
from registry.partner import Partner
from registry.records import ProbeRecord
from registry.runspec import RunSpec
from registry.states import JobState, RunState
from registry.store import Store, now
from tests.helpers import consortium, local_site

SPEC = RunSpec.model_validate(
    {
        "name": "r",
        "stages": [
            {"name": "a", "site": "site-a", "command": ["true"]},
            {"name": "b", "site": "site-b", "command": ["true"], "needs": ["a"]},
        ],
    }
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    consortium(store)
    return store


def test_only_the_owner_registers_or_changes_a_site(store: Store) -> None:
    with pytest.raises(AccessDenied, match="registered by the partner that owns it"):
        store.put_site(local_site("site-c", "cuni"), "csc")
    with pytest.raises(AccessDenied, match="belongs to partner 'csc'"):
        store.put_site(local_site("site-b", "cuni"), "cuni")
    assert store.put_site(local_site("site-b", "csc", labels={"x": "y"}), "csc") is False
    assert store.get_site("site-b").site.labels == {"x": "y"}


def test_only_the_owner_removes_a_site(store: Store) -> None:
    with pytest.raises(AccessDenied):
        store.remove_site("site-a", "csc")
    store.remove_site("site-a", "cuni")
    with pytest.raises(NotFoundError, match="no site 'site-a'"):
        store.get_site("site-a")


def test_site_of_unknown_partner_is_refused(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no partner 'ghost'"):
        store.put_site(local_site("site-x", "ghost"), "ghost")


def test_sites_round_trip(store: Store, tmp_path: Path) -> None:
    reopened = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    names = [r.site.name for r in reopened.list_sites()]
    assert names == ["site-a", "site-b"]
    assert reopened.get_site("site-b").site == store.get_site("site-b").site
    assert reopened.list_partners()[0] == Partner(id="csc", name="CSC", country="FI")


def test_run_stages_jobs_round_trip(store: Store) -> None:
    run = store.create_run("abcd1234", SPEC, "cuni", {"x.py": (b"print(1)\n", 0o755)})
    assert run.state is RunState.PENDING and run.created.tzinfo is not None
    assert [s.name for s in store.stages("abcd1234")] == ["a", "b"]
    assert store.run_files("abcd1234") == {"x.py": (b"print(1)\n", 0o755)}
    [job] = store.add_jobs(
        [
            {
                "run_id": "abcd1234",
                "stage": "a",
                "attempt": 1,
                "site": "site-a",
                "job_name": "hpcfleet-abcd1234-a-1",
                "scheduler_id": None,
                "array_index": None,
                "array_value": None,
                "state": JobState.SUBMITTING,
            }
        ]
    )
    started = now()
    store.update_jobs(
        [(job.id, {"scheduler_id": "7", "state": JobState.RUNNING, "started": started})]
    )
    [again] = store.jobs("abcd1234", "a", 1)
    assert (again.scheduler_id, again.state, again.started) == ("7", JobState.RUNNING, started)
    store.update_stage("abcd1234", "a", state=RunState.COMPLETED)
    assert store.stages("abcd1234")[0].state is RunState.COMPLETED
    assert store.get_run("abcd1234").spec == SPEC


def test_runs_list_oldest_first(store: Store) -> None:
    for run_id in ("bbbb0000", "aaaa0000"):
        store.create_run(run_id, SPEC, "cuni")
    assert [r.run_id for r in store.list_runs()] == ["bbbb0000", "aaaa0000"]


def test_milestones_belong_to_who_added_them(store: Store) -> None:
    milestone = Milestone.model_validate(
        {
            "id": "m1",
            "title": "First",
            "due": "2026-06-30",
            "criteria": [{"stage_completed": {"run": "r", "stage": "a"}}],
        }
    )
    assert store.put_milestone(milestone, "cuni") is True
    with pytest.raises(AccessDenied, match="added by partner 'cuni'"):
        store.put_milestone(milestone, "csc")
    assert store.list_milestones()[0].owner == "cuni"


def test_latest_probe_per_site(store: Store) -> None:
    for ok in (False, True):
        store.add_probe(ProbeRecord(site="site-a", checked_at=now(), reachable=True, ok=ok))
    assert store.latest_probes()["site-a"].ok is True
