"""The job store: SQLAlchemy 2 async Core over SQLite (WAL, the default) or PostgreSQL.

A job row is written (QUEUED, no vendor id) before the vendor is called and completed after;
every phase change is a transition row; terminal rows never change phase again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
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
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.core.errors import BadRequest, Conflict

log = structlog.get_logger(__name__)
T = TypeVar("T")

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
    UniqueConstraint("backend", "vendor_name", name="uq_jobs_backend_vendor_name"),
    UniqueConstraint("backend", "backend_job_id", name="uq_jobs_backend_job_id"),
)
Index("ix_jobs_tenant_id", jobs.c.tenant, jobs.c.id)
Index("ix_jobs_backend_active", jobs.c.backend, jobs.c.terminal, jobs.c.submit_state)
Index("ix_jobs_phase_id", jobs.c.phase, jobs.c.id)
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


# Versioned migrations: append, never edit. Each runs once, in its own transaction.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "jobs, labels, transitions, idempotency keys", _create(*V1_TABLES)),
    (2, "leases and the webhook outbox", _v2),
]


@dataclass
class ListFilters:
    """Filters of GET /v1/jobs."""

    tenant: str | None = None  # None: every tenant (admin)
    backend: str | None = None
    phases: Sequence[str] = ()
    project: str | None = None
    labels: Sequence[tuple[str, str]] = ()
    name_prefix: str | None = None
    include_deleted: bool = False
    include_external: bool = True
    external_projects: Sequence[str] = ()


def encode_token(last_id: str) -> str:
    """Opaque page token."""
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    """Inverse of encode_token; a bad token is a 400 naming the parameter."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = data["after"]
        if not isinstance(after, str):
            raise TypeError
        return after
    except (ValueError, KeyError, TypeError) as err:
        raise BadRequest("page_token is not a token this gateway issued",
                         errors=[{"loc": ["query", "page_token"], "msg": "invalid page token"}]) from err


class Store:
    """The job tables. Every operation is one synchronous unit of work run in one transaction:
    inline on the event loop for SQLite (its statements take microseconds, less than a thread hop),
    through SQLAlchemy's greenlet bridge on asyncpg for PostgreSQL."""

    def __init__(self, url: str, echo: bool = False,
                 webhook_targets: Callable[[str | None], list[str]] | None = None,
                 cache_size: int = 100_000) -> None:
        self.url = url
        self.webhook_targets = webhook_targets or (lambda _tenant: [])
        u = make_url(url)
        self.is_sqlite = u.get_backend_name() == "sqlite"
        self.engine: AsyncEngine | None = None
        self.sync_engine: Engine | None = None
        if self.is_sqlite:
            if u.database and u.database != ":memory:":
                Path(u.database).parent.mkdir(parents=True, exist_ok=True)
            # The built-in driver whatever the URL says (sqlite+aiosqlite is accepted): see above.
            self.sync_engine = create_engine(u.set(drivername="sqlite"), echo=echo, pool_size=2, max_overflow=4,
                                             connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(self.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(url, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=True)
        # SQLite mode is one writer process, so rows read back can be kept until this process changes them.
        self._rows: OrderedDict[str, dict[str, Any]] | None = OrderedDict() if self.is_sqlite else None
        self._cache_size = cache_size

    async def run(self, fn: Callable[..., T], *args: Any, write: bool = True) -> T:
        """Run `fn(connection, *args)` in one transaction (write) or on a plain connection (read)."""
        if self.sync_engine is not None:
            with (self.sync_engine.begin() if write else self.sync_engine.connect()) as conn:
                return fn(conn, *args)
        assert self.engine is not None
        async with (self.engine.begin() if write else self.engine.connect()) as aconn:
            return await aconn.run_sync(fn, *args)

    def _forget(self, ids: Iterable[str] | None = None) -> None:
        if self._rows is None:
            return
        if ids is None:
            self._rows.clear()
        else:
            for i in ids:
                self._rows.pop(i, None)

    async def migrate(self) -> int:
        """Apply pending migrations; several replicas may race, so PostgreSQL serializes on a lock."""
        is_sqlite = self.is_sqlite

        def work(conn: Connection) -> int:
            if not is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(7270001)"))
            schema_migrations.create(conn, checkfirst=True)
            done = set(conn.execute(select(schema_migrations.c.version)).scalars())
            for version, description, fn in MIGRATIONS:
                if version in done:
                    continue
                fn(conn)
                conn.execute(insert(schema_migrations).values(version=version, description=description,
                                                              applied_at=time.time()))
                log.info("schema_migrated", version=version, description=description)
            return max(v for v, _, _ in MIGRATIONS)

        return await self.run(work)

    async def checkpoint_loop(self, every: float = 0.5) -> None:
        """SQLite: move the WAL into the database from a worker thread, so that no commit on the event
        loop ever pays for a checkpoint's fsync (auto-checkpoints are off on the loop's connections)."""
        if self.sync_engine is None:
            return
        import sqlite3

        path = make_url(self.url).database or ":memory:"

        def run() -> None:
            conn = sqlite3.connect(path, timeout=30)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(run)
            except Exception as err:
                log.warning("sqlite_checkpoint_failed", error=str(err))

    async def close(self) -> None:
        """Dispose of the connection pools."""
        if self.engine is not None:
            await self.engine.dispose()
        if self.sync_engine is not None:
            self.sync_engine.dispose()

    # -- writes -------------------------------------------------------------------------
    async def create_job(self, row: dict[str, Any], idem: tuple[str, str, str] | None = None) -> None:
        """Insert a job, its labels, its first transition and its idempotency key, atomically.
        A key already taken raises Conflict with the existing job id in `extra`."""
        now = row["created_at"]

        def work(conn: Connection) -> None:
            # Parameters, not .values(): the statement stays the same, so its compiled form is reused.
            if idem is not None:
                conn.execute(insert(idempotency_keys), {"tenant": idem[0], "key": idem[1], "body_hash": idem[2],
                                                        "job_id": row["id"], "created_at": now})
            conn.execute(insert(jobs), row)
            if row["labels"]:
                conn.execute(insert(job_labels), [{"job_id": row["id"], "key": k, "value": v}
                                                  for k, v in row["labels"].items()])
            self._transitions(conn, [(row, 1, None, row["phase"], row["status"].get("vendor_phase"),
                                      "accepted by the gateway" if row["origin"] == "gateway"
                                      else "imported from the vendor")], row["origin"], now)

        self._forget([row["id"]])
        try:
            await self.run(work)
        except IntegrityError as err:
            if idem is not None:
                found = await self.idempotent(idem[0], idem[1])
                if found is not None:
                    raise Conflict("idempotency key already used", extra={"job_id": found[1],
                                                                          "body_hash": found[0]}) from err
            raise
        self._keep(dict(row))

    def _keep(self, row: dict[str, Any]) -> None:
        if self._rows is None:
            return
        self._rows[row["id"]] = row
        if len(self._rows) > self._cache_size:
            self._rows.popitem(last=False)

    def remember(self, job_id: str, **changes: Any) -> bool:
        """SQLite mode: update the cached row ahead of a write-behind (False when not cached)."""
        if self._rows is None or job_id not in self._rows:
            return False
        self._rows[job_id] = {**self._rows[job_id], **changes}
        return True

    async def idempotent(self, tenant: str, key: str) -> tuple[str, str] | None:
        """(body_hash, job_id) stored for an idempotency key."""
        def work(conn: Connection) -> tuple[str, str] | None:
            r = conn.execute(select(idempotency_keys.c.body_hash, idempotency_keys.c.job_id).where(
                idempotency_keys.c.tenant == tenant, idempotency_keys.c.key == key)).first()
            return (r[0], r[1]) if r else None

        return await self.run(work, write=False)

    async def set_fields(self, job_id: str, **values: Any) -> None:
        """Update columns of one job (not its phase: use apply_status)."""
        values["updated_at"] = time.time()
        self._forget([job_id])
        stmt = update(jobs).where(jobs.c.id == bindparam("b_id")).values({k: bindparam(f"b_{k}") for k in values})
        params = {"b_id": job_id, **{f"b_{k}": v for k, v in values.items()}}
        await self.run(lambda conn: conn.execute(stmt, params))

    async def apply_status(self, job_id: str, status: dict[str, Any], source: str, **extra: Any) -> bool:
        """Store a new status; a phase change adds a transition. A terminal job keeps its phase.
        Returns True when the phase changed."""
        changed = await self.run(self._apply_many, [(job_id, status)], source, extra, {})
        self._forget([job_id])
        return changed > 0

    async def apply_statuses(self, updates: Sequence[tuple[str, dict[str, Any]]], source: str,
                             extra: dict[str, Any] | None = None, keep_cache: bool = False) -> int:
        """apply_status for many jobs in one transaction (a sync page): a handful of statements instead
        of four per job. `extra` maps a job id to more columns for it. Returns the phase changes."""
        if not updates:
            return 0
        ids = [job_id for job_id, _ in updates]
        changed = await self.run(self._apply_many, list(updates), source, {}, extra or {})
        if not keep_cache:
            self._forget(ids)
        return changed

    def _apply_many(self, conn: Connection, updates: list[tuple[str, dict[str, Any]]], source: str,
                    extra: dict[str, Any], per_job: dict[str, dict[str, Any]]) -> int:
        now = time.time()
        ids = [job_id for job_id, _ in updates]
        q = select(jobs.c.id, jobs.c.phase, jobs.c.terminal, jobs.c.status, jobs.c.tenant, jobs.c.name,
                   jobs.c.backend).where(jobs.c.id.in_(ids))
        if not self.is_sqlite:
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
            seqs = dict(conn.execute(select(transitions.c.job_id, func.max(transitions.c.seq)).where(
                transitions.c.job_id.in_([m[0]["id"] for m in moved])).group_by(transitions.c.job_id)).all())
            self._transitions(conn, [(job, int(seqs.get(job["id"]) or 0) + 1, old, st["phase"],
                                      st.get("vendor_phase"), st.get("message")) for job, old, st in moved],
                              source, now)
        return len(moved)

    def _transitions(self, conn: Connection,
                     items: Sequence[tuple[dict[str, Any], int, str | None, str, str | None, str | None]],
                     source: str, at: float) -> None:
        """Insert transitions and, in the same transaction, their webhook deliveries (the outbox)."""
        conn.execute(insert(transitions), [
            {"job_id": job["id"], "seq": seq, "from_phase": frm, "to_phase": to, "vendor_phase": vp,
             "message": msg, "source": source, "at": at} for job, seq, frm, to, vp, msg in items])
        deliveries = []
        for job, seq, frm, to, vp, msg in items:
            urls = self.webhook_targets(job.get("tenant"))
            if not urls:
                continue
            event_id = f"{job['id']}:{seq}"
            payload = {"event_id": event_id, "type": "job.transition", "job_id": job["id"],
                       "job_name": job["name"], "backend": job["backend"], "tenant": job.get("tenant"),
                       "seq": seq, "from_phase": frm, "to_phase": to, "vendor_phase": vp, "message": msg, "at": at}
            deliveries += [{"event_id": event_id, "tenant": job.get("tenant") or "", "url": u, "payload": payload,
                            "attempts": 0, "next_attempt_at": at} for u in urls]
        if deliveries:
            conn.execute(insert(outbox), deliveries)

    async def mark_stale(self, backend: str, stale: bool) -> int:
        """Flag (or clear) every live job of a backend as stale; phases and observed_at stay."""
        def work(conn: Connection) -> list[str]:
            rows = conn.execute(select(jobs.c.id, jobs.c.status).where(
                jobs.c.backend == backend, jobs.c.terminal.is_(False), jobs.c.deleted_at.is_(None))).all()
            flip = [{"b_id": job_id, "b_status": {**(status or {}), "stale": stale}} for job_id, status in rows
                    if bool((status or {}).get("stale")) != stale]
            if flip:
                conn.execute(update(jobs).where(jobs.c.id == bindparam("b_id")).values(status=bindparam("b_status")),
                             flip)
            return [f["b_id"] for f in flip]

        flipped = await self.run(work)
        self._forget(flipped)
        return len(flipped)

    # -- leases (several replicas on one database) ----------------------------------------
    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew a named lease; True while `owner` holds it."""
        is_sqlite = self.is_sqlite

        def work(conn: Connection) -> bool:
            now = time.time()
            if is_sqlite:
                from sqlalchemy.dialects.sqlite import insert as upsert
            else:
                from sqlalchemy.dialects.postgresql import insert as upsert  # type: ignore[assignment]
            stmt = upsert(leases).values(name=name, owner=owner, expires_at=now + ttl)
            stmt = stmt.on_conflict_do_update(
                index_elements=[leases.c.name], set_={"owner": owner, "expires_at": now + ttl},
                where=or_(leases.c.expires_at < now, leases.c.owner == owner))
            conn.execute(stmt)
            holder = conn.execute(select(leases.c.owner).where(leases.c.name == name)).scalar_one()
            return bool(holder == owner)

        return await self.run(work)

    async def release_lease(self, name: str, owner: str) -> None:
        """Give a lease up (on shutdown) so another replica takes over at once."""
        await self.run(lambda conn: conn.execute(delete(leases).where(leases.c.name == name,
                                                                      leases.c.owner == owner)))

    # -- webhook outbox -----------------------------------------------------------------
    async def claim_outbox(self, owner: str, limit: int = 50, lease_seconds: float = 30.0) -> list[dict[str, Any]]:
        """Due deliveries, leased to `owner` so no other replica sends them meanwhile."""
        is_sqlite = self.is_sqlite

        def work(conn: Connection) -> list[dict[str, Any]]:
            now = time.time()
            due = select(outbox.c.id).where(
                outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= now,
                or_(outbox.c.leased_until.is_(None), outbox.c.leased_until < now)).order_by(outbox.c.id).limit(limit)
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

        return await self.run(work)

    async def outbox_result(self, row_id: int, owner: str, delivered: bool,
                            next_attempt_at: float | None = None, error: str | None = None) -> None:
        """Record a delivery attempt."""
        values: dict[str, Any] = {"leased_until": None, "lease_owner": None, "last_error": error}
        if delivered:
            values["delivered_at"] = time.time()
        else:
            values["next_attempt_at"] = next_attempt_at or time.time()
        await self.run(lambda conn: conn.execute(update(outbox).where(
            outbox.c.id == row_id, outbox.c.lease_owner == owner).values(**values)))

    async def get(self, job_id: str) -> dict[str, Any] | None:
        """One job row (callers must not change it: in SQLite mode it is the cached row)."""
        if self._rows is not None:
            row = self._rows.get(job_id)
            if row is not None:
                self._rows.move_to_end(job_id)
                return row

        def work(conn: Connection) -> dict[str, Any] | None:
            r = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
            return dict(r) if r else None

        row = await self.run(work, write=False)
        if row is not None and self._rows is not None:
            self._rows[job_id] = row
            if len(self._rows) > self._cache_size:
                self._rows.popitem(last=False)
        return row

    async def list_jobs(self, f: ListFilters, limit: int, after: str | None) -> list[dict[str, Any]]:
        """Newest first, keyset-paginated on the (time-ordered) id."""
        conds: list[Any] = []
        if f.tenant is not None:
            own = jobs.c.tenant == f.tenant
            if f.external_projects:
                own = or_(own, and_(jobs.c.origin == "external", jobs.c.project.in_(list(f.external_projects))))
            conds.append(own)
        if not f.include_external:
            conds.append(jobs.c.origin == "gateway")
        if f.backend:
            conds.append(jobs.c.backend == f.backend)
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
        if after:
            conds.append(jobs.c.id < after)
        q = select(jobs).where(*conds).order_by(jobs.c.id.desc()).limit(limit)
        return await self.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def live_jobs(self, backend: str) -> list[dict[str, Any]]:
        """Submitted, non-terminal, not deleted jobs of a backend (what a sync cycle looks at): only the
        columns a sync needs, so a cycle over thousands of jobs decodes no specs or reports."""
        q = select(jobs.c.id, jobs.c.backend_job_id, jobs.c.vendor_name, jobs.c.vendor_kind, jobs.c.phase,
                   jobs.c.status, jobs.c.cancel_requested, jobs.c.created_at).where(jobs.c.backend == backend, jobs.c.terminal.is_(False),
                               jobs.c.submit_state == "submitted", jobs.c.deleted_at.is_(None))
        return await self.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def pending(self, backend: str | None = None, older_than: float = 0.0) -> list[dict[str, Any]]:
        """Jobs accepted but not yet confirmed on the vendor."""
        conds = [jobs.c.submit_state == "pending", jobs.c.created_at <= time.time() - older_than]
        if backend:
            conds.append(jobs.c.backend == backend)
        q = select(jobs).where(*conds).order_by(jobs.c.id)
        return await self.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def known_vendor_ids(self, backend: str) -> set[str]:
        """Vendor ids of every job of a backend the store has."""
        q = select(jobs.c.backend_job_id).where(jobs.c.backend == backend, jobs.c.backend_job_id.is_not(None))
        return await self.run(lambda conn: {r[0] for r in conn.execute(q)}, write=False)

    async def transitions(self, job_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """A job's phase transitions, oldest first."""
        q = select(transitions).where(transitions.c.job_id == job_id, transitions.c.seq > after_seq) \
            .order_by(transitions.c.seq)
        return await self.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def transitions_since(self, last_id: int, tenant: str | None, projects: Sequence[str] = (),
                                limit: int = 500) -> list[dict[str, Any]]:
        """Transitions after a global id, with their job's name and backend; `tenant` None means all."""
        q = select(transitions, jobs.c.name, jobs.c.backend).join(jobs, jobs.c.id == transitions.c.job_id) \
            .where(transitions.c.id > last_id)
        if tenant is not None:
            own = jobs.c.tenant == tenant
            if projects:
                own = or_(own, and_(jobs.c.origin == "external", jobs.c.project.in_(list(projects))))
            q = q.where(own)
        q = q.order_by(transitions.c.id).limit(limit)
        return await self.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def last_transition_id(self) -> int:
        """The newest transition id (0 when none)."""
        return await self.run(lambda conn: int(conn.execute(
            select(func.coalesce(func.max(transitions.c.id), 0))).scalar_one()), write=False)

    async def phase_counts(self) -> list[tuple[str, str, int]]:
        """(backend, phase, count) of jobs not deleted, for /metrics."""
        q = select(jobs.c.backend, jobs.c.phase, func.count()).where(jobs.c.deleted_at.is_(None)) \
            .group_by(jobs.c.backend, jobs.c.phase)
        return await self.run(lambda conn: [(r[0], r[1], int(r[2])) for r in conn.execute(q)], write=False)

    async def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Bulk-insert job rows as they are (benchmark and test set-up)."""
        for start in range(0, len(rows), 5000):
            chunk = rows[start:start + 5000]
            await self.run(lambda conn, c=chunk: conn.execute(insert(jobs), c))


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA wal_autocheckpoint=0")  # Store.checkpoint_loop does it off the event loop
    cur.close()
