"""Job rows: written (QUEUED, no vendor id) before the vendor is called and confirmed after; every
phase change goes through here with its transition; terminal rows never change phase again.

SQLite mode is one writer process, so rows read back are kept until this process changes them, and a
submit's confirmation may be written just behind its response (batched): until then the kept row is
the truth for this process, and any other write or sync read flushes first. A crash before the flush
leaves the job pending, and pending jobs are settled by the vendor-name lookup: nothing is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import bindparam, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway.core.errors import Conflict
from gateway.store.db import Database
from gateway.store.events import Events
from gateway.store.keys import IdempotencyKeys
from gateway.store.schema import job_labels, jobs
from gateway.store.visibility import Viewer, visible_to

log = structlog.get_logger(__name__)

CONFIRM_BATCH_SECONDS = 0.01
READ_CHUNK = 16  # rows per read of a long scan (about 0.1 ms); the loop gets turns in between
# Status keys the gateway observes itself (the idle watch), kept when the vendor's status is stored.
ACTIVITY_KEYS = ("idle", "idle_since", "gpu_utilization", "gpu_utilization_points", "activity_checked_at")


@dataclass
class ListFilters:
    """Filters of GET /v1/jobs."""

    viewer: Viewer | None = None  # who reads (see visibility.py); None: every tenant's jobs
    backend: str | None = None
    phases: Sequence[str] = ()
    project: str | None = None
    labels: Sequence[tuple[str, str]] = ()
    label_keys: Sequence[str] = ()  # the label is set, whatever its value
    vendor_kinds: Sequence[str] = ()  # e.g. ("inference", "service") for GET /v1/jobs?kind=inference
    origin: str | None = None  # gateway | external
    name_prefix: str | None = None
    include_deleted: bool = False
    include_external: bool = True


class JobRows:
    """Reads and writes of job rows."""

    def __init__(self, db: Database, events: Events, cache_size: int = 100_000) -> None:
        self.db = db
        self.events = events
        self._rows: OrderedDict[str, dict[str, Any]] | None = OrderedDict() if db.is_sqlite else None
        self._cache_size = cache_size
        self._confirmations: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self._flushing = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the row cache (SQLite mode) ------------------------------------------------------
    def _forget(self, ids: Iterable[str]) -> None:
        if self._rows is not None:
            for i in ids:
                self._rows.pop(i, None)

    def _keep(self, row: dict[str, Any]) -> None:
        if self._rows is None:
            return
        self._rows[row["id"]] = row
        if len(self._rows) > self._cache_size:
            self._rows.popitem(last=False)

    # -- writes -------------------------------------------------------------------------
    async def create(self, row: dict[str, Any], idem: tuple[str, str, str] | None = None) -> None:
        """Insert a job, its labels, its first transition and its idempotency key, atomically.
        A key already taken raises Conflict with the existing job id in `extra`. A migration target
        (`migrated_from` set) claims its source in the same transaction: a source has one target, and a
        second claim raises Conflict naming the first target."""
        now = row["created_at"]

        def work(conn: Connection) -> None:
            if idem is not None:
                IdempotencyKeys.insert(conn, idem[0], idem[1], idem[2], row["id"], now)
            source = row.get("migrated_from")
            if source is not None:
                claimed = conn.execute(update(jobs).where(jobs.c.id == source, jobs.c.migrated_to.is_(None))
                                       .values(migrated_to=row["id"], updated_at=now))
                if claimed.rowcount != 1:
                    taken = conn.execute(select(jobs.c.migrated_to).where(jobs.c.id == source)).scalar()
                    raise Conflict(f"job {source} is already migrated to {taken}", extra={"job_id": taken})
            # Parameters, not .values(): the statement stays the same, so its compiled form is reused.
            conn.execute(insert(jobs), row)
            if row["labels"]:
                conn.execute(insert(job_labels), [{"job_id": row["id"], "key": k, "value": v}
                                                  for k, v in row["labels"].items()])
            self.events.append(conn, [(row, 1, None, row["phase"], row["status"].get("vendor_phase"),
                                       "accepted by the gateway" if row["origin"] == "gateway"
                                       else "imported from the vendor")], row["origin"], now)

        self._forget([row["id"], *([row["migrated_from"]] if row.get("migrated_from") else [])])
        try:
            await self.db.run(work)
        except IntegrityError as err:
            if idem is not None:
                found = await IdempotencyKeys(self.db).find(idem[0], idem[1])
                if found is not None:
                    raise Conflict("idempotency key already used", extra={"job_id": found[1],
                                                                          "body_hash": found[0]}) from err
            raise
        self._keep(dict(row))

    async def release_migration(self, source: str, target: str) -> None:
        """Let a source be migrated again after its target was refused by the vendor."""
        await self._flushed()
        await self.db.run(lambda conn: conn.execute(update(jobs).where(
            jobs.c.id == source, jobs.c.migrated_to == target).values(migrated_to=None, updated_at=time.time())))
        self._forget([source])

    async def confirm(self, job_id: str, status: dict[str, Any], cols: dict[str, Any],
                      write_behind: bool = False) -> None:
        """Record that the vendor has the job (its id, `submitted`, its first status). With
        `write_behind`, in SQLite mode, the write is batched just behind the caller (see above)."""
        if write_behind and self._rows is not None and job_id in self._rows:
            self._rows[job_id] = {**self._rows[job_id], "phase": status["phase"],
                                  "terminal": bool(status["terminal"]), "status": status, **cols}
            self._confirmations.append((job_id, status, cols))
            if len(self._confirmations) == 1:
                task = asyncio.ensure_future(self.flush(delay=CONFIRM_BATCH_SECONDS))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        await self.apply_status(job_id, status, "vendor", **cols)

    async def flush(self, delay: float = 0.0) -> None:
        """Write the confirmations kept in memory (one transaction for all of them)."""
        if delay:
            await asyncio.sleep(delay)  # let a few more arrive: one commit for the lot
        async with self._flushing:
            batch, self._confirmations = self._confirmations, []
            if not batch:
                return
            try:
                await self.db.run(self._apply_many, [(j, st) for j, st, _ in batch], "vendor", {},
                                  {j: cols for j, _, cols in batch})
            except Exception as err:
                log.error("confirmation_write_failed", count=len(batch), error=str(err))
                self._forget([j for j, _, _ in batch])  # the database says pending: recovery settles them

    async def _flushed(self) -> None:
        if self._confirmations:
            await self.flush()

    async def set_fields(self, job_id: str, **values: Any) -> None:
        """Update columns of one job (not its phase: use apply_status)."""
        await self._flushed()
        values["updated_at"] = time.time()
        self._forget([job_id])
        stmt = update(jobs).where(jobs.c.id == bindparam("b_id")).values({k: bindparam(f"b_{k}") for k in values})
        params = {"b_id": job_id, **{f"b_{k}": v for k, v in values.items()}}
        await self.db.run(lambda conn: conn.execute(stmt, params))

    async def apply_status(self, job_id: str, status: dict[str, Any], source: str, **extra: Any) -> bool:
        """Store a new status; a phase change adds a transition. A terminal job keeps its phase.
        Returns True when the phase changed."""
        await self._flushed()
        changed = await self.db.run(self._apply_many, [(job_id, status)], source, extra, {})
        self._forget([job_id])
        return changed > 0

    async def apply_statuses(self, updates: Sequence[tuple[str, dict[str, Any]]], source: str) -> int:
        """apply_status for many jobs in one transaction (a sync page): a handful of statements instead
        of four per job. Returns the phase changes."""
        if not updates:
            return 0
        await self._flushed()
        changed = await self.db.run(self._apply_many, list(updates), source, {}, {})
        self._forget([job_id for job_id, _ in updates])
        return changed

    def _apply_many(self, conn: Connection, updates: list[tuple[str, dict[str, Any]]], source: str,
                    extra: dict[str, Any], per_job: dict[str, dict[str, Any]]) -> int:
        now = time.time()
        ids = [job_id for job_id, _ in updates]
        q = select(jobs.c.id, jobs.c.phase, jobs.c.terminal, jobs.c.status, jobs.c.tenant, jobs.c.name,
                   jobs.c.backend).where(jobs.c.id.in_(ids))
        if not self.db.is_sqlite:
            q = q.order_by(jobs.c.id).with_for_update()
        current = {r[0]: r for r in conn.execute(q)}
        params: list[dict[str, Any]] = []
        moved: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
        for job_id, status in updates:
            r = current.get(job_id)
            if r is None:
                continue
            old_status = r[3] or {}
            if r[2]:  # terminal: only a stale flag may be cleared (and extra columns set)
                if status.get("stale") is False and old_status.get("stale"):
                    params.append({"b_id": job_id, "b_phase": r[1], "b_terminal": True,
                                   "b_status": {**old_status, "stale": False}})
                elif extra:
                    params.append({"b_id": job_id, "b_phase": r[1], "b_terminal": True, "b_status": old_status})
                continue
            status = {**status, **{k: old_status[k] for k in ACTIVITY_KEYS if k in old_status}}
            if status["phase"] != "RUNNING":  # idle describes a running job only
                status.update(idle=False, idle_since=None)
            params.append({"b_id": job_id, "b_phase": status["phase"], "b_terminal": bool(status.get("terminal")),
                           "b_status": status})
            if status["phase"] != r[1]:
                moved.append(({"id": job_id, "tenant": r[4], "name": r[5], "backend": r[6]}, r[1], status))
        if params:
            conn.execute(update(jobs).where(jobs.c.id == bindparam("b_id")).values(
                phase=bindparam("b_phase"), terminal=bindparam("b_terminal"), status=bindparam("b_status"),
                updated_at=now, **extra), params)
        by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for job_id, cols in per_job.items():
            if job_id in current:
                by_keys.setdefault(tuple(sorted(cols)), []).append(
                    {"b_id": job_id, **{f"b_{k}": v for k, v in cols.items()}})
        for keys, rows in by_keys.items():
            conn.execute(update(jobs).where(jobs.c.id == bindparam("b_id")).values(
                **{k: bindparam(f"b_{k}") for k in keys}), rows)
        if moved:
            seqs = self.events.last_seqs(conn, [m[0]["id"] for m in moved])
            self.events.append(conn, [(job, seqs.get(job["id"], 0) + 1, old, st["phase"], st.get("vendor_phase"),
                                       st.get("message")) for job, old, st in moved], source, now)
        return len(moved)

    async def set_activity(self, job_id: str, values: dict[str, Any], mark: tuple[str, str] | None = None) -> bool:
        """Store what the idle watch observed of a running job (status keys in ACTIVITY_KEYS) and, with
        `mark` (kind, message), append an idle/active event in the same transaction. Nothing is written
        when the job is no longer RUNNING. Returns whether it was written."""
        await self._flushed()

        def work(conn: Connection) -> bool:
            q = select(jobs.c.phase, jobs.c.terminal, jobs.c.status, jobs.c.tenant, jobs.c.name, jobs.c.backend) \
                .where(jobs.c.id == job_id)
            if not self.db.is_sqlite:
                q = q.with_for_update()
            r = conn.execute(q).first()
            if r is None or r[1] or r[0] != "RUNNING":
                return False
            status = {**(r[2] or {}), **{k: v for k, v in values.items() if k in ACTIVITY_KEYS}}
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(status=status, updated_at=time.time()))
            if mark is not None:
                seq = self.events.last_seqs(conn, [job_id]).get(job_id, 0) + 1
                job = {"id": job_id, "tenant": r[3], "name": r[4], "backend": r[5]}
                self.events.append(conn, [(job, seq, "RUNNING", "RUNNING", None, mark[1])], "idle-watch",
                                   time.time(), kind=mark[0])
            return True

        written = await self.db.run(work)
        self._forget([job_id])
        return written

    async def mark_stale(self, backend: str, stale: bool) -> int:
        """Flag (or clear) every live job of a backend as stale; phases and observed_at stay."""
        await self._flushed()

        def work(conn: Connection) -> list[str]:
            rows = conn.execute(select(jobs.c.id, jobs.c.status).where(
                jobs.c.backend == backend, jobs.c.terminal.is_(False), jobs.c.deleted_at.is_(None))).all()
            flip = [{"b_id": job_id, "b_status": {**(status or {}), "stale": stale}} for job_id, status in rows
                    if bool((status or {}).get("stale")) != stale]
            if flip:
                conn.execute(update(jobs).where(jobs.c.id == bindparam("b_id")).values(status=bindparam("b_status")),
                             flip)
            return [f["b_id"] for f in flip]

        flipped = await self.db.run(work)
        self._forget(flipped)
        return len(flipped)

    async def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Bulk-insert job rows as they are (benchmark and test set-up)."""
        for start in range(0, len(rows), 5000):
            chunk = rows[start:start + 5000]
            await self.db.run(lambda conn, c=chunk: conn.execute(insert(jobs), c))

    # -- reads --------------------------------------------------------------------------
    def kept(self, job_id: str) -> dict[str, Any] | None:
        """The row this process keeps for a job (SQLite mode), or None: a read that needs no I/O."""
        if self._rows is None:
            return None
        row = self._rows.get(job_id)
        if row is not None:
            self._rows.move_to_end(job_id)
        return row

    async def get(self, job_id: str) -> dict[str, Any] | None:
        """One job row (callers must not change it: in SQLite mode it is the kept row)."""
        if self._rows is not None:
            row = self._rows.get(job_id)
            if row is not None:
                self._rows.move_to_end(job_id)
                return row

        def work(conn: Connection) -> dict[str, Any] | None:
            r = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
            return dict(r) if r else None

        row = await self.db.run(work, write=False)
        if row is not None:
            self._keep(row)
        return row

    async def page(self, f: ListFilters, limit: int, after: str | None) -> list[dict[str, Any]]:
        """Newest first, keyset-paginated on the (time-ordered) id."""
        conds = self._conds(f)
        if after:
            conds.append(jobs.c.id < after)
        q = select(jobs).where(*conds).order_by(jobs.c.id.desc()).limit(limit)
        return await self.db.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def usage_rows(self, f: ListFilters, since: float, until: float) -> list[dict[str, Any]]:
        """The jobs `f` selects that may have run between `since` and `until` (for GPU-hours)."""
        conds = [*self._conds(f), jobs.c.created_at <= until, jobs.c.submit_state == "submitted",
                 or_(jobs.c.terminal.is_(False), jobs.c.updated_at >= since)]
        q = select(jobs.c.id, jobs.c.tenant, jobs.c.backend, jobs.c.project, jobs.c.labels, jobs.c.spec,
                   jobs.c.status, jobs.c.phase).where(*conds)
        return await self.db.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    @staticmethod
    def _conds(f: ListFilters) -> list[Any]:
        conds: list[Any] = []
        own = visible_to(f.viewer)
        if own is not None:
            conds.append(own)
        if not f.include_external:
            conds.append(jobs.c.origin == "gateway")
        if f.backend:
            conds.append(jobs.c.backend == f.backend)
        if f.vendor_kinds:
            conds.append(jobs.c.vendor_kind.in_(list(f.vendor_kinds)))
        if f.origin:
            conds.append(jobs.c.origin == f.origin)
        if f.phases:
            conds.append(jobs.c.phase.in_(list(f.phases)))
        if f.project:
            conds.append(jobs.c.project == f.project)
        if f.name_prefix:
            conds.append(jobs.c.name.startswith(f.name_prefix, autoescape=True))
        if not f.include_deleted:
            conds.append(jobs.c.deleted_at.is_(None))
        for k, v in f.labels:
            conds.append(exists().where(job_labels.c.job_id == jobs.c.id, job_labels.c.key == k,
                                        job_labels.c.value == v))
        for k in f.label_keys:
            conds.append(exists().where(job_labels.c.job_id == jobs.c.id, job_labels.c.key == k))
        return conds

    async def live(self, backend: str) -> list[dict[str, Any]]:
        """Submitted, non-terminal, not deleted jobs of a backend (what a sync cycle looks at): only the
        columns a sync needs, read in chunks with the event loop free in between (SQLite reads run on the
        loop: one read of 10,000 rows held every request up for a fifth of a second)."""
        await self._flushed()
        base = select(jobs.c.id, jobs.c.backend_job_id, jobs.c.vendor_name, jobs.c.vendor_kind, jobs.c.phase,
                      jobs.c.status, jobs.c.cancel_requested, jobs.c.created_at).where(
            jobs.c.backend == backend, jobs.c.terminal.is_(False), jobs.c.submit_state == "submitted",
            jobs.c.deleted_at.is_(None))
        return await self._scan(base)

    async def _scan(self, query: Any) -> list[dict[str, Any]]:
        """All rows of a long read, READ_CHUNK at a time with the event loop free in between."""
        return await self.db.scan(query, READ_CHUNK)

    async def busy(self, backend: str, phases: Sequence[str]) -> bool:
        """Whether any live job of a backend is in one of `phases` (one small query)."""
        # No test of `terminal`: no busy phase is terminal, and with it SQLite picked the index on it and
        # read every live job instead of ix_jobs_backend_phase.
        q = select(jobs.c.id).where(jobs.c.backend == backend, jobs.c.deleted_at.is_(None),
                                    jobs.c.phase.in_(list(phases))).limit(1)
        return await self.db.run(lambda conn: conn.execute(q).first() is not None, write=False)

    async def running(self, backend: str | None = None) -> list[dict[str, Any]]:
        """RUNNING jobs on the vendor (of one backend, or all), with the spec and status the idle watch and
        the GPU gauges read."""
        await self._flushed()
        conds = [jobs.c.phase == "RUNNING", jobs.c.submit_state == "submitted", jobs.c.deleted_at.is_(None)]
        if backend:
            conds.append(jobs.c.backend == backend)
        return await self._scan(select(jobs.c.id, jobs.c.backend, jobs.c.backend_job_id, jobs.c.vendor_name,
                                       jobs.c.vendor_kind, jobs.c.status, jobs.c.spec).where(*conds))

    async def pending(self, backend: str | None = None, older_than: float = 0.0) -> list[dict[str, Any]]:
        """Jobs accepted but not yet confirmed on the vendor."""
        await self._flushed()
        conds = [jobs.c.submit_state == "pending", jobs.c.created_at <= time.time() - older_than]
        if backend:
            conds.append(jobs.c.backend == backend)
        q = select(jobs).where(*conds).order_by(jobs.c.id)
        return await self.db.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def known_vendor_ids(self, backend: str) -> set[str]:
        """Vendor ids of every job of a backend the store has."""
        q = select(jobs.c.backend_job_id).where(jobs.c.backend == backend, jobs.c.backend_job_id.is_not(None))
        return await self.db.run(lambda conn: {r[0] for r in conn.execute(q)}, write=False)

    async def phase_counts(self) -> list[tuple[str, str, int]]:
        """(backend, phase, count) of jobs not deleted, for /metrics."""
        q = select(jobs.c.backend, jobs.c.phase, func.count()).where(jobs.c.deleted_at.is_(None)) \
            .group_by(jobs.c.backend, jobs.c.phase)
        return await self.db.run(lambda conn: [(r[0], r[1], int(r[2])) for r in conn.execute(q)], write=False)

    async def close(self) -> None:
        """Write what is still kept in memory."""
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()
