"""Transitions (every phase change of a job) and the webhook outbox written beside them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from gateway.store.db import Database
from gateway.store.schema import jobs, outbox, transitions
from gateway.store.visibility import Viewer, visible_to

# (job {id, tenant, name, backend}, seq, from_phase, to_phase, vendor_phase, message)
Transition = tuple[dict[str, Any], int, str | None, str, str | None, str | None]
_INSERT_TRANSITIONS = insert(transitions)
_INSERT_OUTBOX = insert(outbox)
_LAST_SEQS = select(transitions.c.job_id, func.max(transitions.c.seq)).where(
    transitions.c.job_id.in_(bindparam("ids", expanding=True))).group_by(transitions.c.job_id)


class Events:
    """A job's history and the deliveries it owes to webhooks."""

    def __init__(self, db: Database, webhook_targets: Callable[[str | None], list[str]] | None = None) -> None:
        self.db = db
        self.webhook_targets = webhook_targets or (lambda _tenant: [])

    def append(self, conn: Connection, items: Sequence[Transition], source: str, at: float,
               kind: str = "transition") -> None:
        """Insert transitions (or activity marks: kind idle/active) and, in the caller's transaction, their
        webhook deliveries (the outbox)."""
        conn.execute(_INSERT_TRANSITIONS, [
            {"job_id": job["id"], "seq": seq, "from_phase": frm, "to_phase": to, "vendor_phase": vp,
             "message": msg, "source": source, "at": at, "kind": kind, "reason": job.get("reason")}
            for job, seq, frm, to, vp, msg in items])
        deliveries = []
        for job, seq, frm, to, vp, msg in items:
            urls = self.webhook_targets(job.get("tenant"))
            if not urls:
                continue
            event_id = f"{job['id']}:{seq}"
            payload = {"event_id": event_id, "type": f"job.{kind}", "job_id": job["id"],
                       "job_name": job["name"], "backend": job["backend"], "tenant": job.get("tenant"),
                       "seq": seq, "from_phase": frm, "to_phase": to, "vendor_phase": vp, "message": msg,
                       "reason": job.get("reason"), "at": at}
            deliveries += [{"event_id": event_id, "tenant": job.get("tenant") or "", "url": u, "payload": payload,
                            "attempts": 0, "next_attempt_at": at} for u in urls]
        if deliveries:
            conn.execute(_INSERT_OUTBOX, deliveries)

    @staticmethod
    def last_seqs(conn: Connection, job_ids: Sequence[str]) -> dict[str, int]:
        """The newest seq of each job (inside the caller's transaction)."""
        rows = conn.execute(_LAST_SEQS, {"ids": list(job_ids)}).all()
        return {r[0]: int(r[1] or 0) for r in rows}

    async def for_job(self, job_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """A job's phase transitions, oldest first."""
        q = select(transitions).where(transitions.c.job_id == job_id, transitions.c.seq > after_seq) \
            .order_by(transitions.c.seq)
        return await self.db.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def since(self, last_id: int, viewer: Viewer | None, limit: int = 500) -> list[dict[str, Any]]:
        """Transitions after a global id that `viewer` may see (None: all), with their job's name and backend."""
        q = select(transitions, jobs.c.name, jobs.c.backend, jobs.c.tenant, jobs.c.origin, jobs.c.project) \
            .join(jobs, jobs.c.id == transitions.c.job_id).where(transitions.c.id > last_id)
        own = visible_to(viewer)
        if own is not None:
            q = q.where(own)
        q = q.order_by(transitions.c.id).limit(limit)
        return await self.db.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def phases_of(self, job_ids: Sequence[str]) -> dict[str, list[tuple[float, str]]]:
        """Each job's phase changes as (at, to_phase), oldest first (activity marks left out)."""
        def work(conn: Connection) -> dict[str, list[tuple[float, str]]]:
            out: dict[str, list[tuple[float, str]]] = {}
            ids = list(job_ids)
            for start in range(0, len(ids), 2048):  # a TES page (up to 2048 tasks) in one query
                q = select(transitions.c.job_id, transitions.c.at, transitions.c.to_phase).where(
                    transitions.c.job_id.in_(ids[start:start + 2048]), transitions.c.kind == "transition") \
                    .order_by(transitions.c.job_id, transitions.c.seq)
                for job_id, at, phase in conn.execute(q):
                    out.setdefault(job_id, []).append((float(at), phase))
            return out

        return await self.db.run(work, write=False)

    async def last_id(self) -> int:
        """The newest transition id (0 when none)."""
        return await self.db.run(lambda conn: int(conn.execute(
            select(func.coalesce(func.max(transitions.c.id), 0))).scalar_one()), write=False)

    # -- the webhook outbox --------------------------------------------------------------
    async def claim_outbox(self, owner: str, limit: int = 50, lease_seconds: float = 30.0,
                           skip_urls: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Due deliveries, leased to `owner` so no other replica sends them meanwhile (none for the
        endpoints in `skip_urls`: this replica is still sending to them)."""
        is_sqlite = self.db.is_sqlite

        def work(conn: Connection) -> list[dict[str, Any]]:
            now = time.time()
            due = select(outbox.c.id).where(
                outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= now,
                or_(outbox.c.leased_until.is_(None), outbox.c.leased_until < now))
            if skip_urls:
                due = due.where(outbox.c.url.not_in(list(skip_urls)))
            due = due.order_by(outbox.c.id).limit(limit)
            if not is_sqlite:
                due = due.with_for_update(skip_locked=True)
            ids = [r[0] for r in conn.execute(due)]
            if not ids:
                return []
            # Counting the attempt before sending marks any later send of the same event as a redelivery,
            # even when this replica dies after sending and before recording the result.
            conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(
                leased_until=now + lease_seconds, lease_owner=owner, attempts=outbox.c.attempts + 1))
            return [dict(r) for r in conn.execute(select(outbox).where(outbox.c.id.in_(ids))
                                                  .order_by(outbox.c.id)).mappings()]

        return await self.db.run(work)

    async def outbox_release(self, row_ids: Sequence[int], owner: str) -> None:
        """Give back claimed rows that were not attempted (their attempt is not counted)."""
        if row_ids:
            await self.db.run(lambda conn: conn.execute(update(outbox).where(
                outbox.c.id.in_(list(row_ids)), outbox.c.lease_owner == owner, outbox.c.delivered_at.is_(None))
                .values(leased_until=None, lease_owner=None, attempts=outbox.c.attempts - 1)))

    async def outbox_defer(self, url: str, after_id: int, until: float) -> None:
        """An endpoint is backing off: its later deliveries wait too, so each job's stay in order."""
        await self.db.run(lambda conn: conn.execute(update(outbox).where(
            outbox.c.url == url, outbox.c.delivered_at.is_(None), outbox.c.id > after_id,
            outbox.c.next_attempt_at < until).values(next_attempt_at=until)))

    async def outbox_result(self, row_id: int, owner: str, delivered: bool,
                            next_attempt_at: float | None = None, error: str | None = None) -> None:
        """Record a delivery attempt."""
        values: dict[str, Any] = {"leased_until": None, "lease_owner": None, "last_error": error}
        if delivered:
            values["delivered_at"] = time.time()
        else:
            values["next_attempt_at"] = next_attempt_at or time.time()
        await self.db.run(lambda conn: conn.execute(update(outbox).where(
            outbox.c.id == row_id, outbox.c.lease_owner == owner).values(**values)))
