"""The listings' light read path (`registry.listing`) against real databases, SQLite and
PostgreSQL: it reads what the store reads, reports the rows the store reports broken,
and answers None for a database that is not at the schema HEAD."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text, update

from registry import migrate
from registry.errors import DocumentError, NotFoundError
from registry.listing import open_listing
from registry.results import StoredResult, read_results, replace_job_results
from registry.runspec import RunSpec
from registry.states import JobState, RunState
from registry.store import Store
from registry.tables import RunRow, SiteRow
from tests.helpers import consortium
from tests.integration.test_migrations import fresh_url, pg_database  # noqa: F401 (fixtures)

SPEC = RunSpec.model_validate(
    {
        "name": "r",
        "stages": [
            {"name": "a", "site": "site-a", "command": ["true"]},
            {"name": "b", "needs": ["a"], "site": "site-b", "command": ["true"],
             "array": {"language": ["fi", "cs"]}},
        ],
    }
)  # fmt: skip


@pytest.fixture(autouse=True)
def _forget_checked_urls() -> None:
    migrate.forget_checked()


@pytest.fixture
def store(fresh_url: str) -> Store:  # noqa: F811 (the imported fixture)
    store = Store.open(fresh_url)
    consortium(store)
    return store


def a_run_with_jobs_and_results(store: Store) -> None:
    store.create_run("run00001", SPEC, "cuni")
    store.create_run("run00002", SPEC, "csc")
    moment = datetime(2026, 12, 1, 12, 30, 5, 123456, tzinfo=UTC)
    store.update_run("run00001", state=RunState.RUNNING, started=moment, reason="why not")
    store.update_stage("run00001", "b", state=RunState.RUNNING, sites=["site-b"], attempt=1)
    jobs = store.add_jobs(
        [
            {"run_id": "run00001", "stage": "b", "attempt": 1, "site": "site-b",
             "job_name": "b", "scheduler_id": "7", "array_index": i, "array_value": value,
             "state": JobState.COMPLETED, "started": moment, "ended": moment}
            for i, value in enumerate(["fi", "cs"])
        ]
    )  # fmt: skip
    replace_job_results(
        store,
        "run00001",
        jobs[0].id,
        [StoredResult("b", "accuracy", 0.5, "site-b", 1, {"language": "fi"}, "", 0)],
    )


def dumped(records: list[Any]) -> list[dict[str, Any]]:
    return [r.model_dump() for r in records]


def test_the_listing_reads_what_the_store_reads(store: Store) -> None:
    a_run_with_jobs_and_results(store)
    url = store.engine.url.render_as_string(hide_password=False)
    with open_listing(url) as listing:
        assert listing is not None
        runs, broken = listing.runs()
        run = listing.run("run00001")
        stages, jobs = listing.stages("run00001"), listing.jobs("run00001")
        results = listing.results("run00001")
        sites = listing.sites()
        probes = listing.latest_probes()
        with pytest.raises(NotFoundError, match="no run 'nosuch'"):
            listing.run("nosuch")
    assert broken == []
    stored = store.list_runs()
    assert [r.run_id for r in runs] == [r.run_id for r in stored]
    for light, full in zip(runs, stored, strict=True):
        for name in ("name", "partner", "experiment", "state", "reason", "created", "started"):
            assert getattr(light, name) == getattr(full, name), name
    assert run.model_dump() == store.get_run("run00001").model_dump()
    assert run.spec == SPEC
    assert dumped(stages) == dumped(store.stages("run00001"))
    assert dumped(jobs) == dumped(store.jobs("run00001"))
    assert results == read_results(store, "run00001")
    assert [(s.name, s.partner) for s in sites] == [("site-a", "cuni"), ("site-b", "csc")]
    assert sites[0].document == store.get_site("site-a").site.model_dump(mode="json")
    assert probes == {}


def test_a_run_with_an_unknown_state_is_named_as_the_store_names_it(store: Store) -> None:
    a_run_with_jobs_and_results(store)
    with store.engine.begin() as connection:
        connection.execute(
            update(RunRow).where(RunRow.run_id == "run00002").values(state="EXPLODED")
        )
        connection.execute(
            update(SiteRow).where(SiteRow.name == "site-b").values(document={"name": "site-b"})
        )
    url = store.engine.url.render_as_string(hide_password=False)
    with open_listing(url) as listing:
        assert listing is not None
        runs, broken = listing.runs()
        with pytest.raises(DocumentError, match="stored run run00002"):
            listing.run("run00002")
    assert [r.run_id for r in runs] == ["run00001"]
    assert [(b.kind, b.name, b.owner, b.problem) for b in broken] == [
        (b.kind, b.name, b.owner, b.problem) for b in store.scan_runs().broken
    ]


def test_a_database_behind_the_schema_is_left_to_the_store(store: Store) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    with store.engine.begin() as connection:
        connection.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0003'"))
    with open_listing(url) as listing:
        assert listing is None
