"""Runs keep the site documents they were driven with, so that their jobs stay
cancellable after a site is removed from the registry.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Frozen: a migration never imports `registry.tables`, which keeps changing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("site_documents", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("site_documents")
