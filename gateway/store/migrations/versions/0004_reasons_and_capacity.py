"""transitions.reason: why the job moved (no-capacity, preempted, oom, ...), so history, SSE and webhooks
say why a job waits or ended, not only that it did; and a capacity table, the latest capacity read from each
backend, so every replica answers `why` with what the syncing replica saw.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    """Add transitions.reason (null for the transitions recorded before) and the capacity table."""
    with op.batch_alter_table("transitions") as batch:
        batch.add_column(sa.Column("reason", sa.String(32), nullable=True))
    op.create_table("capacity",
                    sa.Column("backend", sa.String(64), primary_key=True),
                    sa.Column("snapshot", sa.JSON, nullable=True),
                    sa.Column("observed_at", sa.Float, nullable=True),
                    sa.Column("error", sa.Text, nullable=True))


def downgrade() -> None:
    """Drop the capacity table and transitions.reason."""
    op.drop_table("capacity")
    with op.batch_alter_table("transitions") as batch:
        batch.drop_column("reason")
