"""Alembic migrations of the registry schema (see `registry.migrate`)."""
