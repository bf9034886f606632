"""The store's tables and its versioned migrations (append, never edit)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.engine import Connection

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations", metadata,
    Column("version", Integer, primary_key=True),
    Column("description", String(200), nullable=False),
    Column("applied_at", Float, nullable=False),
)

jobs = Table(
    "jobs", metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=True),
    Column("name", String(80), nullable=False),
    Column("backend", String(64), nullable=False),
    Column("project", String(128), nullable=True),
    Column("vendor_name", String(128), nullable=False),
    Column("vendor_kind", String(16), nullable=False, default="training"),
    Column("backend_job_id", String(128), nullable=True),
    Column("spec", JSON, nullable=False),
    Column("report", JSON, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("phase", String(16), nullable=False),
    Column("terminal", Boolean, nullable=False, default=False),
    Column("status", JSON, nullable=False),
    Column("origin", String(16), nullable=False, default="gateway"),
    Column("submit_state", String(16), nullable=False),
    Column("submit_error", Text, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("deleted_at", Float, nullable=True),
    Column("migrated_from", String(32), nullable=True),
    Column("migrated_to", String(32), nullable=True),
    # The GA4GH TES task a job was submitted as (its executors, inputs, outputs, tags as sent), if any.
    Column("tes_task", JSON, nullable=True),
    UniqueConstraint("backend", "vendor_name", name="uq_jobs_backend_vendor_name"),
    UniqueConstraint("backend", "backend_job_id", name="uq_jobs_backend_job_id"),
)
Index("ix_jobs_tenant_id", jobs.c.tenant, jobs.c.id)
Index("ix_jobs_backend_active", jobs.c.backend, jobs.c.terminal, jobs.c.submit_state)
Index("ix_jobs_phase_id", jobs.c.phase, jobs.c.id)
Index("ix_jobs_backend_phase", jobs.c.backend, jobs.c.phase)
Index("ix_jobs_name", jobs.c.name)
Index("ix_jobs_project", jobs.c.project)

job_labels = Table(
    "job_labels", metadata,
    Column("job_id", String(32), primary_key=True),
    Column("key", String(63), primary_key=True),
    Column("value", String(63), nullable=False),
)
Index("ix_job_labels_kv", job_labels.c.key, job_labels.c.value, job_labels.c.job_id)

transitions = Table(
    "transitions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("from_phase", String(16), nullable=True),
    Column("to_phase", String(16), nullable=False),
    Column("vendor_phase", String(64), nullable=True),
    Column("message", Text, nullable=True),
    Column("source", String(32), nullable=False),
    Column("at", Float, nullable=False),
    # "transition" (a phase change) or an activity mark on a running job ("idle", "active").
    Column("kind", String(16), nullable=False, server_default="transition"),
    UniqueConstraint("job_id", "seq", name="uq_transitions_job_seq"),
)

idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("job_id", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
)

leases = Table(
    "leases", metadata,
    Column("name", String(100), primary_key=True),
    Column("owner", String(100), nullable=False),
    Column("expires_at", Float, nullable=False),
)

outbox = Table(
    "webhook_outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(80), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("leased_until", Float, nullable=True),
    Column("lease_owner", String(100), nullable=True),
    Column("delivered_at", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("event_id", "url", name="uq_outbox_event_url"),
)
Index("ix_outbox_due", outbox.c.delivered_at, outbox.c.next_attempt_at)

V1_TABLES = (jobs, job_labels, transitions, idempotency_keys)
V2_TABLES = (leases, outbox)


def _create(*tables: Table) -> Callable[[Connection], None]:
    def run(conn: Connection) -> None:
        for table in tables:
            table.create(conn, checkfirst=True)
            for ix in table.indexes:
                ix.create(conn, checkfirst=True)
    return run


def _v2(conn: Connection) -> None:
    _create(*V2_TABLES)(conn)
    # Raw DDL: an Index object would attach itself to `transitions` and leak into migration 1.
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_transitions_id_job ON transitions (id, job_id)"))


def _v3(conn: Connection) -> None:
    # Migration 1 creates `transitions` from the current table object, so a new store has the column already.
    if "kind" not in {c["name"] for c in inspect(conn).get_columns("transitions")}:
        conn.execute(text("ALTER TABLE transitions ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'transition'"))


def _v4(conn: Connection) -> None:
    if "tes_task" not in {c["name"] for c in inspect(conn).get_columns("jobs")}:
        conn.execute(text("ALTER TABLE jobs ADD COLUMN tes_task JSON"))


def _v5(conn: Connection) -> None:
    # The sync asks after every cycle whether a backend has a job starting or stopping; without this index
    # SQLite read every live job of the backend to say no (4 ms at 10,000 jobs, on the event loop).
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_jobs_backend_phase ON jobs (backend, phase)"))


# Versioned migrations: append, never edit. Each runs once, in its own transaction.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "jobs, labels, transitions, idempotency keys", _create(*V1_TABLES)),
    (2, "leases and the webhook outbox", _v2),
    (3, "transition kinds (idle and active marks)", _v3),
    (4, "the TES task a job was submitted as", _v4),
    (5, "an index for the busy-phase check of each sync cycle", _v5),
]
