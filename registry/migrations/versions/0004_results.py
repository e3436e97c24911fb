"""Evaluation results: one row per (checkpoint, cell, metric) a job reported, with the
cell's coordinates, so that `hpcfleet results` and `run fill` know which cells of a
matrix have a result.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Frozen: a migration never imports `registry.tables`, which keeps changing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=63), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("array_index", sa.Integer(), nullable=True),
        sa.Column("checkpoint", sa.String(length=500), nullable=False),
        sa.Column("cell", sa.JSON(), nullable=False),
        sa.Column("metric", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_results_run_stage", "results", ["run_id", "stage"])
    op.create_index(op.f("ix_results_job_id"), "results", ["job_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_results_job_id"), table_name="results")
    op.drop_index("ix_results_run_stage", table_name="results")
    op.drop_table("results")
