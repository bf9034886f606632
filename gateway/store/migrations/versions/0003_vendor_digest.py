"""jobs.vendor_digest: a fingerprint of the vendor-owned part of the stored status (and its stale flag),
so the sync compares what a vendor page says with 10,000 live rows without decoding their statuses.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    """Add jobs.vendor_digest (empty: a row's first sync after the upgrade writes it)."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("vendor_digest", sa.String(24), nullable=True))


def downgrade() -> None:
    """Drop jobs.vendor_digest."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("vendor_digest")
