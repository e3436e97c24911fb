"""Alembic environment of the registry: always run on a connection that
`registry.migrate` opened (and locked), never from an alembic.ini of its own."""

from __future__ import annotations

from alembic import context

from registry.migrate import VERSION_TABLE
from registry.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run the registry's migrations with 'hpcfleet db upgrade' (registry.migrate), "
        "not with the alembic command"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    # SQLite can only change a table by copying it; batch mode does that for us.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
