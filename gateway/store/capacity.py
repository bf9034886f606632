"""The latest capacity read from each backend: written by the replica that syncs the backend, read by all."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from gateway.store.db import Database
from gateway.store.schema import capacity


class CapacityRows:
    """One row per backend: the snapshot, when it was read, and the last read's error."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, backend: str, snapshot: dict[str, Any], observed_at: float) -> None:
        """Store a fresh snapshot (clearing any error)."""
        upsert = sqlite.insert if self.db.is_sqlite else postgresql.insert
        row = {"backend": backend, "snapshot": snapshot, "observed_at": observed_at, "error": None}
        stmt = upsert(capacity).values(**row).on_conflict_do_update(
            index_elements=[capacity.c.backend], set_={k: v for k, v in row.items() if k != "backend"})
        await self.db.run(lambda conn: conn.execute(stmt))

    async def failed(self, backend: str, error: str) -> None:
        """Record that a read failed; the last snapshot stays (and ages)."""
        upsert = sqlite.insert if self.db.is_sqlite else postgresql.insert

        def work(conn: Connection) -> None:
            done = conn.execute(update(capacity).where(capacity.c.backend == backend).values(error=error))
            if done.rowcount == 0:
                conn.execute(upsert(capacity).values(backend=backend, snapshot=None, observed_at=None,
                                                     error=error).on_conflict_do_nothing())

        await self.db.run(work)

    async def get(self, backend: str) -> dict[str, Any] | None:
        """{snapshot, observed_at, age_seconds, error} of a backend, or None when never read."""
        def work(conn: Connection) -> dict[str, Any] | None:
            r = conn.execute(select(capacity).where(capacity.c.backend == backend)).mappings().first()
            return dict(r) if r is not None else None

        got = await self.db.run(work, write=False)
        if got is not None:
            got["age_seconds"] = None if got["observed_at"] is None else max(0.0, time.time() - got["observed_at"])
        return got
