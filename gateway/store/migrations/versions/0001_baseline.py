"""Baseline: the store as the gateway made it before alembic (hand-rolled migrations 1-5).

Frozen: these are the tables of release e9da23a written out, not the current table objects. A store made
by any of the hand-rolled migrations is brought to this schema (tables, columns and indexes it lacks are
added), and their bookkeeping table `schema_migrations` goes.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def _tables() -> set[str]:
    return set(sa.inspect(op.get_bind()).get_table_names())


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    """Create the baseline tables, or complete a store made by the hand-rolled migrations."""
    have = _tables()
    if "jobs" not in have:
        op.create_table(
            "jobs",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("tenant", sa.String(64), nullable=True),
            sa.Column("name", sa.String(80), nullable=False),
            sa.Column("backend", sa.String(64), nullable=False),
            sa.Column("project", sa.String(128), nullable=True),
            sa.Column("vendor_name", sa.String(128), nullable=False),
            sa.Column("vendor_kind", sa.String(16), nullable=False),
            sa.Column("backend_job_id", sa.String(128), nullable=True),
            sa.Column("spec", sa.JSON, nullable=False),
            sa.Column("report", sa.JSON, nullable=False),
            sa.Column("labels", sa.JSON, nullable=False),
            sa.Column("phase", sa.String(16), nullable=False),
            sa.Column("terminal", sa.Boolean, nullable=False),
            sa.Column("status", sa.JSON, nullable=False),
            sa.Column("origin", sa.String(16), nullable=False),
            sa.Column("submit_state", sa.String(16), nullable=False),
            sa.Column("submit_error", sa.Text, nullable=True),
            sa.Column("cancel_requested", sa.Boolean, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
            sa.Column("deleted_at", sa.Float, nullable=True),
            sa.Column("migrated_from", sa.String(32), nullable=True),
            sa.Column("migrated_to", sa.String(32), nullable=True),
            sa.Column("tes_task", sa.JSON, nullable=True),
            sa.UniqueConstraint("backend", "vendor_name", name="uq_jobs_backend_vendor_name"),
            sa.UniqueConstraint("backend", "backend_job_id", name="uq_jobs_backend_job_id"),
        )
    elif "tes_task" not in _columns("jobs"):
        op.add_column("jobs", sa.Column("tes_task", sa.JSON, nullable=True))
    if "job_labels" not in have:
        op.create_table(
            "job_labels",
            sa.Column("job_id", sa.String(32), primary_key=True),
            sa.Column("key", sa.String(63), primary_key=True),
            sa.Column("value", sa.String(63), nullable=False),
        )
    if "transitions" not in have:
        op.create_table(
            "transitions",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("job_id", sa.String(32), nullable=False),
            sa.Column("seq", sa.Integer, nullable=False),
            sa.Column("from_phase", sa.String(16), nullable=True),
            sa.Column("to_phase", sa.String(16), nullable=False),
            sa.Column("vendor_phase", sa.String(64), nullable=True),
            sa.Column("message", sa.Text, nullable=True),
            sa.Column("source", sa.String(32), nullable=False),
            sa.Column("at", sa.Float, nullable=False),
            sa.Column("kind", sa.String(16), nullable=False, server_default="transition"),
            sa.UniqueConstraint("job_id", "seq", name="uq_transitions_job_seq"),
        )
    elif "kind" not in _columns("transitions"):
        op.add_column("transitions", sa.Column("kind", sa.String(16), nullable=False, server_default="transition"))
    if "idempotency_keys" not in have:
        op.create_table(
            "idempotency_keys",
            sa.Column("tenant", sa.String(64), primary_key=True),
            sa.Column("key", sa.String(255), primary_key=True),
            sa.Column("body_hash", sa.String(64), nullable=False),
            sa.Column("job_id", sa.String(32), nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
        )
    if "leases" not in have:
        op.create_table(
            "leases",
            sa.Column("name", sa.String(100), primary_key=True),
            sa.Column("owner", sa.String(100), nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
        )
    if "webhook_outbox" not in have:
        op.create_table(
            "webhook_outbox",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("event_id", sa.String(80), nullable=False),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("url", sa.Text, nullable=False),
            sa.Column("payload", sa.JSON, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("next_attempt_at", sa.Float, nullable=False),
            sa.Column("leased_until", sa.Float, nullable=True),
            sa.Column("lease_owner", sa.String(100), nullable=True),
            sa.Column("delivered_at", sa.Float, nullable=True),
            sa.Column("last_error", sa.Text, nullable=True),
            sa.UniqueConstraint("event_id", "url", name="uq_outbox_event_url"),
        )
    for name, table, cols in [
        ("ix_jobs_tenant_id", "jobs", "tenant, id"),
        ("ix_jobs_backend_active", "jobs", "backend, terminal, submit_state"),
        ("ix_jobs_phase_id", "jobs", "phase, id"),
        ("ix_jobs_backend_phase", "jobs", "backend, phase"),
        ("ix_jobs_name", "jobs", "name"),
        ("ix_jobs_project", "jobs", "project"),
        ("ix_job_labels_kv", "job_labels", "key, value, job_id"),
        ("ix_transitions_id_job", "transitions", "id, job_id"),
        ("ix_outbox_due", "webhook_outbox", "delivered_at, next_attempt_at"),
    ]:
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({cols})")
    if "schema_migrations" in have:
        op.drop_table("schema_migrations")


def downgrade() -> None:
    """Drop every table (the store is empty afterwards)."""
    for table in ("webhook_outbox", "leases", "idempotency_keys", "transitions", "job_labels", "jobs"):
        op.drop_table(table)
