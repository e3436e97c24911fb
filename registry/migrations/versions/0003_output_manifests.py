"""Output manifests: path, size and sha256 of every file a stage produced, per site, so
that `hpcfleet lineage` and the provenance crate can answer what made a file; and the
facts of a launch that only the launching machine knows (the spec's git commit); and
container image digests, hashed once on a site and kept by path, size and mtime.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Frozen: a migration never imports `registry.tables`, which keeps changing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "manifests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=63), nullable=False),
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_manifests_run_stage", "manifests", ["run_id", "stage"])
    op.create_index(op.f("ix_manifests_sha256"), "manifests", ["sha256"])
    op.create_table(
        "launch_facts",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_table(
        "image_digests",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("site", "path", "size", "mtime"),
    )


def downgrade() -> None:
    op.drop_table("image_digests")
    op.drop_table("launch_facts")
    op.drop_index(op.f("ix_manifests_sha256"), table_name="manifests")
    op.drop_index("ix_manifests_run_stage", table_name="manifests")
    op.drop_table("manifests")
