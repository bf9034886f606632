"""TES names and tags as TES has them: jobs.tes_name (the task's name as given, or a /v1 job's name; null for
an unnamed task) and the table tes_tags (the task's tags, any key and value, or a /v1 job's labels), so that
GET /ga4gh/tes/v1/tasks filters by a case-sensitive name prefix and by exact tags. And an index on
(backend, backend_job_id): a delta sync looks up the few jobs a vendor says changed instead of reading every
live job.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    """Add jobs.tes_name and tes_tags, filled from the TES tasks and labels already stored."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("tes_name", sa.Text, nullable=True))
        batch.create_index("ix_jobs_backend_vendor_id", ["backend", "backend_job_id"])
    op.create_table(
        "tes_tags",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_index("ix_tes_tags_key", "tes_tags", ["key", "job_id"])
    conn = op.get_bind()
    op.execute("UPDATE jobs SET tes_name = name WHERE tes_task IS NULL")
    op.execute("INSERT INTO tes_tags (job_id, key, value) SELECT l.job_id, l.key, l.value FROM job_labels l "
               "JOIN jobs j ON j.id = l.job_id WHERE j.tes_task IS NULL")
    rows = conn.execute(sa.text("SELECT id, tes_task FROM jobs WHERE tes_task IS NOT NULL")).fetchall()
    for job_id, raw in rows:
        task: Any = json.loads(raw) if isinstance(raw, str) else raw
        task = task if isinstance(task, dict) else {}
        name = task.get("name")
        if isinstance(name, str):
            conn.execute(sa.text("UPDATE jobs SET tes_name = :n WHERE id = :id"), {"n": name, "id": job_id})
        tags = task.get("tags") if isinstance(task.get("tags"), dict) else {}
        for k, v in tags.items():
            conn.execute(sa.text("INSERT INTO tes_tags (job_id, key, value) VALUES (:j, :k, :v)"),
                         {"j": job_id, "k": str(k), "v": "" if v is None else str(v)})


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_tes_tags_key", "tes_tags")
    op.drop_table("tes_tags")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_backend_vendor_id")
        batch.drop_column("tes_name")
