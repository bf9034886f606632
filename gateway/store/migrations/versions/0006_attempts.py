"""Managed recovery: a job's attempts. jobs.attempt (the current one's number), jobs.retry (the rules, beside
the row so that a status write can decide without decoding the spec), jobs.attempt_at (when the current
attempt was stored: what settling a lost create waits on), jobs.recover_at (when the recovery loop should
look at the job; null: it need not); the table `attempts` holds every attempt that ended before the current.
jobs.size: the bytes of the job's spec and TES task, so that a list page keeps to its byte budget without
reading them.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    """Add the attempt columns and the attempts table."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("retry", sa.JSON, nullable=True))
        batch.add_column(sa.Column("attempt_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("recover_at", sa.Float, nullable=True))
        # The bytes of what a list answer carries of the job (its spec and TES task): a page stops at its budget.
        batch.add_column(sa.Column("size", sa.Integer, nullable=True))
        batch.create_index("ix_jobs_recover_at", ["recover_at"])
        batch.create_index("ix_jobs_submit_state", ["submit_state"])
    op.create_table(
        "attempts",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("n", sa.Integer, primary_key=True),
        sa.Column("backend", sa.String(64), nullable=False),
        sa.Column("vendor_name", sa.String(128), nullable=False),
        sa.Column("vendor_kind", sa.String(16), nullable=False),
        sa.Column("project", sa.String(128), nullable=True),
        sa.Column("backend_job_id", sa.String(128), nullable=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=False),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("stop_owed", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_attempts_stop_owed", "attempts", ["stop_owed"])
    op.execute("UPDATE jobs SET size = length(CAST(spec AS TEXT)) + coalesce(length(CAST(tes_task AS TEXT)), 0)")
    op.create_index("ix_attempts_backend_vendor_id", "attempts", ["backend", "backend_job_id"])


def downgrade() -> None:
    """Drop the attempts table and columns."""
    op.drop_index("ix_attempts_backend_vendor_id", "attempts")
    op.drop_index("ix_attempts_stop_owed", "attempts")
    op.drop_table("attempts")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_submit_state")
        batch.drop_index("ix_jobs_recover_at")
        batch.drop_column("recover_at")
        batch.drop_column("size")
        batch.drop_column("attempt_at")
        batch.drop_column("retry")
        batch.drop_column("attempt")
