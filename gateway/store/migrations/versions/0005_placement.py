"""jobs.placement: the placement decision of a job submitted with `backend: auto` or a list of candidates,
stored with the job before any vendor call; jobs.source_action: what a migration still owes its source
(cancel, suspend), recorded with the target so that a crash cannot lose it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    """Add jobs.placement (null: the job named its backend) and jobs.source_action."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("placement", sa.JSON, nullable=True))
        batch.add_column(sa.Column("source_action", sa.String(16), nullable=True))
        batch.add_column(sa.Column("move_after", sa.Float, nullable=True))
        batch.create_index("ix_jobs_move_after", ["move_after"])
        batch.create_index("ix_jobs_source_action", ["source_action"])


def downgrade() -> None:
    """Drop jobs.source_action and jobs.placement."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_source_action")
        batch.drop_index("ix_jobs_move_after")
        batch.drop_column("move_after")
        batch.drop_column("source_action")
        batch.drop_column("placement")
