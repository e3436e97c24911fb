"""A stored row that no longer validates breaks only itself: listings show the rest and
name it, its owner can still remove it, and run specs are read only when needed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import update

from registry.errors import AccessDenied, DocumentError
from registry.runspec import RunSpec
from registry.store import Store
from registry.tables import RunRow, SiteRow
from tests.helpers import consortium

SPEC = RunSpec.model_validate(
    {"name": "r", "stages": [{"name": "a", "site": "site-a", "command": ["true"]}]}
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    consortium(store)
    return store


def break_site(store: Store, name: str) -> None:
    """What the store held after `site add` accepted min_poll_interval 0.00001."""
    with store.engine.begin() as connection:
        document = {"name": name, "partner": "csc", "scheduler": "local"}
        document["policy"] = {"max_queued_jobs": 200, "min_poll_interval": "1e-05s"}
        connection.execute(update(SiteRow).where(SiteRow.name == name).values(document=document))


def test_a_broken_site_is_left_out_of_listings_and_named(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    break_site(store, "site-b")
    records, broken = store.scan_sites()
    assert [r.site.name for r in records] == ["site-a"]
    assert [(b.kind, b.name, b.owner) for b in broken] == [("site", "site-b", "csc")]
    assert "policy.min_poll_interval" in broken[0].problem
    with caplog.at_level(logging.WARNING, logger="registry.store"):
        assert [r.site.name for r in store.list_sites()] == ["site-a"]
    assert "site 'site-b'" in caplog.text


def test_reading_the_broken_site_itself_is_a_document_error_naming_it(store: Store) -> None:
    break_site(store, "site-b")
    with pytest.raises(DocumentError, match=r"stored site 'site-b': policy\.min_poll_interval"):
        store.get_site("site-b")


def test_only_its_owner_removes_a_broken_site_without_reading_it(store: Store) -> None:
    break_site(store, "site-b")
    with pytest.raises(AccessDenied, match="belongs to partner 'csc'"):
        store.remove_site("site-b", "cuni")
    store.remove_site("site-b", "csc")
    assert store.scan_sites().broken == []


def test_its_owner_can_overwrite_a_broken_site(store: Store) -> None:
    from tests.helpers import local_site

    break_site(store, "site-b")
    with pytest.raises(AccessDenied):
        store.put_site(local_site("site-b", "cuni"), "cuni")
    store.put_site(local_site("site-b", "csc"), "csc")
    assert store.get_site("site-b").site.poll_interval == 0.2


def test_a_run_with_a_broken_spec_is_listed_and_fails_only_where_read(store: Store) -> None:
    store.create_run("good0001", SPEC, "cuni")
    store.create_run("bad00001", SPEC, "cuni")
    with store.engine.begin() as connection:
        connection.execute(
            update(RunRow).where(RunRow.run_id == "bad00001").values(spec={"name": "r"})
        )
    assert [r.run_id for r in store.list_runs()] == ["good0001", "bad00001"]
    with pytest.raises(DocumentError, match="stored run bad00001: stages"):
        _ = store.get_run("bad00001").spec
    assert store.get_run("good0001").spec == SPEC


def test_a_run_row_with_an_unknown_state_is_named_not_fatal(store: Store) -> None:
    store.create_run("good0001", SPEC, "cuni")
    store.create_run("bad00001", SPEC, "cuni")
    with store.engine.begin() as connection:
        connection.execute(
            update(RunRow).where(RunRow.run_id == "bad00001").values(state="EXPLODED")
        )
    records, broken = store.scan_runs()
    assert [r.run_id for r in records] == ["good0001"]
    assert [(b.name, b.owner) for b in broken] == [("bad00001", "cuni")]
