"""Stored output manifests: what each stage produced on each site (path, size, sha256),
the launch facts of a run (the spec's git commit), and container image digests.

Written when a stage's outputs are hashed for collection; read by `hpcfleet lineage`
and the provenance crate. Only manifests are stored, never data, and at most
`MAX_ENTRIES` files per stage and site (the first ones by path), so that a stage that
writes millions of shards cannot swell the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, or_, select

from registry.store import Store
from registry.tables import ImageDigestRow, LaunchFactsRow, ManifestRow

MAX_ENTRIES = 10_000


class ManifestEntry(BaseModel):
    run_id: str
    stage: str
    site: str
    attempt: int
    path: str
    size: int
    sha256: str


def put_outputs(
    store: Store,
    run_id: str,
    stage: str,
    site: str,
    attempt: int,
    entries: Mapping[str, tuple[int, str]],
) -> int:
    """Replace the stored manifest of `stage`'s outputs on `site`; returns how many
    entries were left out by the size cap."""
    kept = sorted(entries.items())[:MAX_ENTRIES]
    with store.session() as s:
        s.execute(
            delete(ManifestRow).where(
                ManifestRow.run_id == run_id, ManifestRow.stage == stage, ManifestRow.site == site
            )
        )
        s.add_all(
            ManifestRow(
                run_id=run_id,
                stage=stage,
                site=site,
                attempt=attempt,
                path=path,
                size=size,
                sha256=digest,
            )
            for path, (size, digest) in kept
        )
    return len(entries) - len(kept)


def outputs(store: Store, run_id: str, stage: str | None = None) -> list[ManifestEntry]:
    """The stored output files of a run (or of one of its stages), by stage, site, path."""
    query = select(ManifestRow).where(ManifestRow.run_id == run_id)
    if stage is not None:
        query = query.where(ManifestRow.stage == stage)
    query = query.order_by(ManifestRow.stage, ManifestRow.site, ManifestRow.path)
    with store.session() as s:
        return [_entry(row) for row in s.scalars(query)]


def find(store: Store, sha256: str | None = None, path: str | None = None) -> list[ManifestEntry]:
    """Stored output files with this checksum, or whose path is (or ends with) `path`."""
    query = select(ManifestRow)
    if sha256 is not None:
        query = query.where(ManifestRow.sha256 == sha256.lower())
    if path is not None:
        clean = path.strip("/")
        query = query.where(
            or_(ManifestRow.path == clean, ManifestRow.path.endswith("/" + clean, autoescape=True))
        )
    with store.session() as s:
        rows = s.scalars(query.order_by(ManifestRow.recorded, ManifestRow.id))
        return [_entry(row) for row in rows]


def _entry(row: ManifestRow) -> ManifestEntry:
    return ManifestEntry(
        run_id=row.run_id,
        stage=row.stage,
        site=row.site,
        attempt=row.attempt,
        path=row.path,
        size=row.size,
        sha256=row.sha256,
    )


def put_launch_facts(store: Store, run_id: str, facts: dict[str, Any]) -> None:
    with store.session() as s:
        s.merge(LaunchFactsRow(run_id=run_id, facts=facts))


def launch_facts(store: Store, run_id: str) -> dict[str, Any]:
    with store.session() as s:
        row = s.get(LaunchFactsRow, run_id)
        return dict(row.facts) if row is not None else {}


def image_digest(store: Store, site: str, path: str, size: int, mtime: int) -> str | None:
    with store.session() as s:
        row = s.get(ImageDigestRow, (site, path, size, mtime))
        return row.sha256 if row is not None else None


def put_image_digest(
    store: Store, site: str, path: str, size: int, mtime: int, sha256: str
) -> None:
    with store.session() as s:
        s.merge(ImageDigestRow(site=site, path=path, size=size, mtime=mtime, sha256=sha256))
