"""transitions.reason: why the job moved (no-capacity, preempted, oom, ...), so history, SSE and webhooks
say why a job waits or ended, not only that it did.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    """Add transitions.reason (null for the transitions recorded before)."""
    with op.batch_alter_table("transitions") as batch:
        batch.add_column(sa.Column("reason", sa.String(32), nullable=True))


def downgrade() -> None:
    """Drop transitions.reason."""
    with op.batch_alter_table("transitions") as batch:
        batch.drop_column("reason")
