"""Attempts: the vendor jobs of a gateway job that ended before its current one (the current attempt is
the job row itself). Written in the transaction that ends an attempt (gateway.store.jobs), read by GET,
usage, TES logs and the dashboard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from gateway.store.db import Database
from gateway.store.schema import attempts

_INSERT = insert(attempts)


def ended_attempt(r: Any, status: dict[str, Any], now: float, stop_owed: bool) -> dict[str, Any]:
    """The attempts row of the job row `r` (its current attempt), ending now with `status`."""
    return {"job_id": r.id, "n": int(r.attempt or 1), "backend": r.backend, "vendor_name": r.vendor_name,
            "vendor_kind": r.vendor_kind or "training", "project": r.project, "backend_job_id": r.backend_job_id,
            "started_at": float(r.attempt_at or r.created_at), "ended_at": now, "status": status,
            "stop_owed": stop_owed}


class AttemptRows:
    """Reads and writes of ended attempts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def insert(conn: Connection, row: dict[str, Any]) -> None:
        """Record an ended attempt (inside the caller's transaction)."""
        conn.execute(_INSERT, row)

    async def of(self, job_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The ended attempts of each job, oldest first."""
        q = select(attempts).where(attempts.c.job_id.in_(bindparam("ids", expanding=True))) \
            .order_by(attempts.c.job_id, attempts.c.n)

        def work(conn: Connection) -> dict[str, list[dict[str, Any]]]:
            out: dict[str, list[dict[str, Any]]] = {}
            for r in conn.execute(q, {"ids": list(job_ids)}).mappings():
                out.setdefault(r["job_id"], []).append(dict(r))
            return out

        return await self.db.run(work, write=False)

    async def stops_owed(self) -> list[dict[str, Any]]:
        """Ended attempts whose vendor job may still run (moved away from a requeue): to be cancelled."""
        q = select(attempts).where(attempts.c.stop_owed.is_(True))
        return await self.db.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def stopped(self, job_id: str, n: int) -> None:
        """The vendor job of an ended attempt is stopped: nothing is owed any more."""
        await self.db.run(lambda conn: conn.execute(update(attempts).where(
            attempts.c.job_id == job_id, attempts.c.n == n).values(stop_owed=False)))

    async def vendor_ids(self, backend: str) -> set[str]:
        """The vendor ids of a backend's ended attempts."""
        q = select(attempts.c.backend_job_id).where(attempts.c.backend == backend,
                                                    attempts.c.backend_job_id.is_not(None))
        return await self.db.run(lambda conn: {r[0] for r in conn.execute(q)}, write=False)
