"""The registry's schema revision, importable without SQLAlchemy (`registry.listing`
checks it before reading)."""

from __future__ import annotations

HEAD = "0005"  # newest revision in migrations/versions (tests check they agree)
VERSION_TABLE = "hpcfleet_alembic_version"  # not alembic_version: MLflow and Prefect use that
