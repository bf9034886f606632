"""The store's tables, as the queries see them. The schema itself is made and changed by the alembic
revisions in gateway/store/migrations/versions (a change here needs a new revision there)."""

from __future__ import annotations

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
)

metadata = MetaData()

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
    Column("placement", JSON, nullable=True),  # where the gateway placed it and why (core.placement.Placement)
    # On a migration's source: the action its migration still owes it (cancel | suspend), set in the
    # transaction that creates the target, cleared once done (by the request, its retry, or recovery).
    Column("source_action", String(16), nullable=True),
    # When the job may move to another candidate if it still waits for GPUs (created_at + its max_wait);
    # null: it never moves. Rebalance reads only the rows past it, not every QUEUED job.
    Column("move_after", Float, nullable=True),
    # The GA4GH TES task a job was submitted as (its executors, inputs, outputs, tags as sent), if any.
    Column("tes_task", JSON, nullable=True),
    # Managed recovery (gateway.core.recovery): the current attempt's number, the job's retry rules (null:
    # none), when the current attempt was stored, and when the recovery loop should look at the job.
    Column("attempt", Integer, nullable=False, server_default="1"),
    Column("retry", JSON, nullable=True),
    Column("attempt_at", Float, nullable=True),
    Column("recover_at", Float, nullable=True),
    Column("size", Integer, nullable=True),  # bytes of spec + tes_task as JSON: a list page's byte budget reads it
    Column("tes_name", Text, nullable=True),  # the TES task's name as given (a /v1 job's name); TES name_prefix
    # Bumped by every write of the row (see gateway.store.jobs).
    Column("version", Integer, nullable=False, server_default="1"),
    # gateway.core.transitions.digest of `status`, written with it (what the sync compares).
    Column("vendor_digest", String(24), nullable=True),
    UniqueConstraint("backend", "vendor_name", name="uq_jobs_backend_vendor_name"),
    UniqueConstraint("backend", "backend_job_id", name="uq_jobs_backend_job_id"),
)
Index("ix_jobs_tenant_id", jobs.c.tenant, jobs.c.id)
Index("ix_jobs_backend_active", jobs.c.backend, jobs.c.terminal, jobs.c.submit_state)
Index("ix_jobs_phase_id", jobs.c.phase, jobs.c.id)
Index("ix_jobs_backend_phase", jobs.c.backend, jobs.c.phase)
Index("ix_jobs_name", jobs.c.name)
Index("ix_jobs_project", jobs.c.project)
Index("ix_jobs_move_after", jobs.c.move_after)
Index("ix_jobs_source_action", jobs.c.source_action)
Index("ix_jobs_recover_at", jobs.c.recover_at)
Index("ix_jobs_submit_state", jobs.c.submit_state)
Index("ix_jobs_backend_vendor_id", jobs.c.backend, jobs.c.backend_job_id)  # a delta's news looked up by vendor id

# The attempts of a job that ended before its current one (the current one is the job row itself).
attempts = Table(
    "attempts", metadata,
    Column("job_id", String(32), primary_key=True),
    Column("n", Integer, primary_key=True),
    Column("backend", String(64), nullable=False),
    Column("vendor_name", String(128), nullable=False),
    Column("vendor_kind", String(16), nullable=False),
    Column("project", String(128), nullable=True),
    Column("backend_job_id", String(128), nullable=True),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
    Column("status", JSON, nullable=False),  # its last status
    # Its vendor job may still live (a requeued preemption moved away): the recovery loop cancels it.
    Column("stop_owed", Boolean, nullable=False, server_default="0"),
)
Index("ix_attempts_stop_owed", attempts.c.stop_owed)
Index("ix_attempts_backend_vendor_id", attempts.c.backend, attempts.c.backend_job_id)

job_labels = Table(
    "job_labels", metadata,
    Column("job_id", String(32), primary_key=True),
    Column("key", String(63), primary_key=True),
    Column("value", String(63), nullable=False),
)
Index("ix_job_labels_kv", job_labels.c.key, job_labels.c.value, job_labels.c.job_id)

# A TES task's tags as given (any key, any value: labels are Kubernetes-shaped), or a /v1 job's labels.
tes_tags = Table(
    "tes_tags", metadata,
    Column("job_id", String(32), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
Index("ix_tes_tags_key", tes_tags.c.key, tes_tags.c.job_id)

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
    Column("reason", String(32), nullable=True),  # why it moved (a neutral Reason), when the vendor said
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

# Made by raw DDL in the baseline revision; declared here so the metadata matches the schema.
Index("ix_transitions_id_job", transitions.c.id, transitions.c.job_id)

# The latest capacity read from each backend (written by the replica that syncs it, read by every replica).
capacity = Table(
    "capacity", metadata,
    Column("backend", String(64), primary_key=True),
    Column("snapshot", JSON, nullable=True),  # gateway.core.capacity.Capacity as JSON
    Column("observed_at", Float, nullable=True),
    Column("error", Text, nullable=True),  # why the last read failed (the snapshot is older), if it did
)
