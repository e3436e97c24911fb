"""The registry as the foundation made it: partners, sites, probes, runs, their files,
stages and jobs, milestones.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Frozen: a migration never imports `registry.tables`, which keeps changing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _name(name: str, length: int = 63, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "partners",
        _name("id"),
        _name("name", 200),
        _name("country", 2, nullable=True),
        _when("created", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "probes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _name("site"),
        _when("checked_at", nullable=False),
        sa.Column("reachable", sa.Boolean(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("queue_depth", sa.Integer(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_probes_site"), "probes", ["site"])
    op.create_table(
        "milestones",
        _name("id"),
        _name("owner"),
        sa.Column("document", sa.JSON(), nullable=False),
        _when("created", nullable=False),
        sa.ForeignKeyConstraint(["owner"], ["partners.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "runs",
        _name("run_id", 32),
        _name("name"),
        _name("partner"),
        _name("experiment", 200),
        _name("state", 16),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        _when("created", nullable=False),
        _when("started"),
        _when("ended"),
        _name("mlflow_run_id", 64, nullable=True),
        _name("prefect_flow_run_id", 64, nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        _name("orchestrator", 200, nullable=True),
        _when("heartbeat"),
        sa.ForeignKeyConstraint(["partner"], ["partners.id"]),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index(op.f("ix_runs_created"), "runs", ["created"])
    op.create_index(op.f("ix_runs_name"), "runs", ["name"])
    op.create_index(op.f("ix_runs_state"), "runs", ["state"])
    op.create_table(
        "sites",
        _name("name"),
        _name("partner"),
        sa.Column("document", sa.JSON(), nullable=False),
        _when("created", nullable=False),
        _when("updated", nullable=False),
        sa.ForeignKeyConstraint(["partner"], ["partners.id"]),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _name("run_id", 32),
        _name("stage"),
        sa.Column("attempt", sa.Integer(), nullable=False),
        _name("site"),
        _name("job_name", 200),
        _name("scheduler_id", 64, nullable=True),
        sa.Column("array_index", sa.Integer(), nullable=True),
        _name("array_value", 200, nullable=True),
        _name("state", 16),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        _when("submitted"),
        _when("started"),
        _when("ended"),
        sa.Column("gpu_hours", sa.Float(), nullable=False),
        _name("node", 200, nullable=True),
        _name("mlflow_run_id", 64, nullable=True),
        sa.Column("stdout_path", sa.Text(), nullable=True),
        sa.Column("stderr_path", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_run_stage", "jobs", ["run_id", "stage", "attempt"])
    op.create_index(op.f("ix_jobs_site"), "jobs", ["site"])
    op.create_index(op.f("ix_jobs_state"), "jobs", ["state"])
    op.create_table(
        "run_files",
        _name("run_id", 32),
        _name("path", 500),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
        sa.PrimaryKeyConstraint("run_id", "path"),
    )
    op.create_table(
        "stages",
        _name("run_id", 32),
        _name("name"),
        sa.Column("position", sa.Integer(), nullable=False),
        _name("state", 16),
        sa.Column("sites", sa.JSON(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("choice", sa.Text(), nullable=True),
        _when("started"),
        _when("ended"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
        sa.PrimaryKeyConstraint("run_id", "name"),
    )


def downgrade() -> None:
    for table in (
        "stages",
        "run_files",
        "jobs",
        "sites",
        "runs",
        "milestones",
        "probes",
        "partners",
    ):
        op.drop_table(table)
