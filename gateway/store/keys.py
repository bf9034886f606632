"""Idempotency keys: which job a tenant's key made, and the fingerprint of the body it came with."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from gateway.store.db import Database
from gateway.store.schema import idempotency_keys


class IdempotencyKeys:
    """Lookups of idempotency keys; they are written with their job, in the job's transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def find(self, tenant: str, key: str) -> tuple[str, str] | None:
        """(body_hash, job_id) stored for a tenant's key."""
        def work(conn: Connection) -> tuple[str, str] | None:
            r = conn.execute(select(idempotency_keys.c.body_hash, idempotency_keys.c.job_id).where(
                idempotency_keys.c.tenant == tenant, idempotency_keys.c.key == key)).first()
            return (r[0], r[1]) if r else None

        return await self.db.run(work, write=False)

    @staticmethod
    def insert(conn: Connection, tenant: str, key: str, body_hash: str, job_id: str, at: float) -> None:
        """Take a key inside the caller's transaction (a key already taken raises IntegrityError)."""
        conn.execute(insert(idempotency_keys), {"tenant": tenant, "key": key, "body_hash": body_hash,
                                                "job_id": job_id, "created_at": at})
