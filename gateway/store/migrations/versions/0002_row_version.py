"""A version on every job row, bumped by each write: a status observed against an older version is not
written (gateway.store.jobs), and readers can tell a changed row without decoding it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    """Add jobs.version (1 for every existing row)."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="1"))


def downgrade() -> None:
    """Drop jobs.version."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("version")
