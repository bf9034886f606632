"""Job rows: written (QUEUED, no vendor id) before the vendor is called and confirmed after; every
status change goes through here, in one transaction with its event.

Every write bumps the row's `version`. A status only moves along the edges of gateway.core.transitions,
and an observation made against an older version of the row (a sync page read before a cancel landed)
is not written at all: the next cycle reads the row again. Nothing is kept in memory between requests,
so every reader (GET, list, history, TES, SSE, webhooks, another replica) sees each write at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import bindparam, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway.core.errors import BackendUnavailable, Conflict
from gateway.core.recovery import decide, failure_of, policy_of
from gateway.core.transitions import ACTIVITY_KEYS, allowed, digest, vendor_view
from gateway.store.attempts import AttemptRows, ended_attempt
from gateway.store.db import Database
from gateway.store.events import Events, Transition
from gateway.store.keys import IdempotencyKeys
from gateway.store.schema import attempts, job_labels, jobs, tes_tags
from gateway.store.visibility import Viewer, visible_to

log = structlog.get_logger(__name__)

READ_CHUNK = 16  # rows per read of a long scan (about 0.1 ms); the loop gets turns in between
# (job id, new status, the row version the status was compared with: None when no compare was made)
Update = tuple[str, dict[str, Any], int | None]

# The hot paths' statements, built once: SQLAlchemy then reuses their cache keys and compiled forms (building
# and keying a statement per call cost more than running it on SQLite).
_INSERT_JOB = insert(jobs)
_INSERT_LABELS = insert(job_labels)
_INSERT_TES_TAGS = insert(tes_tags)
_GET = select(jobs).where(jobs.c.id == bindparam("id"))
_VERSION = select(jobs.c.version).where(jobs.c.id == bindparam("id"))
_CURRENT = select(jobs.c.id, jobs.c.phase, jobs.c.terminal, jobs.c.status, jobs.c.tenant, jobs.c.name,
                  jobs.c.backend, jobs.c.version, jobs.c.cancel_requested, jobs.c.retry, jobs.c.attempt,
                  jobs.c.attempt_at, jobs.c.created_at, jobs.c.vendor_name, jobs.c.vendor_kind, jobs.c.project,
                  jobs.c.backend_job_id).where(
    jobs.c.id.in_(bindparam("ids", expanding=True))).order_by(jobs.c.id)
_CURRENT_LOCKED = _CURRENT.with_for_update()  # PostgreSQL: the compare and the write in one locked step
_STATUS = {"phase": bindparam("b_phase"), "terminal": bindparam("b_terminal"), "status": bindparam("b_status"),
           "vendor_digest": bindparam("b_digest"), "updated_at": bindparam("b_now"), "version": jobs.c.version + 1}


@functools.cache
def _write_status(extra: tuple[str, ...]) -> Any:
    """The status write, also setting the columns `extra` (parameters x_<column>): one statement per set."""
    return update(jobs).where(jobs.c.id == bindparam("b_id")).values(
        {**_STATUS, **{k: bindparam(f"x_{k}") for k in extra}})


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
    tes_name_prefix: str | None = None  # the start of the TES name as given, case-sensitive
    tes_tags: Sequence[tuple[str, str | None]] = ()  # TES tag filters: (key, exact value or None: any value)
    id_prefix: str | None = None  # the start of a job id (the CLI's `tjg get 01a2`)
    include_deleted: bool = False
    include_external: bool = True


def tes_name_of(row: dict[str, Any]) -> str | None:
    """The name TES lists a job by: a task's name as given (None for an unnamed task), a /v1 job's name."""
    task = row.get("tes_task")
    if task:
        name = task.get("name")
        return name if isinstance(name, str) else None
    return str(row["name"])


def tes_tags_of(row: dict[str, Any]) -> dict[str, str]:
    """The tags TES filters a job by: a task's tags as given, a /v1 job's labels."""
    task = row.get("tes_task")
    if task:
        tags = task.get("tags")
        return {str(k): "" if v is None else str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}
    return dict(row.get("labels") or {})


class JobRows:
    """Reads and writes of job rows."""

    def __init__(self, db: Database, events: Events) -> None:
        self.db = db
        self.events = events
        self.skipped = 0  # statuses not written: observed against an older row, or a forbidden step
        # Called with the ids of the rows each write of this process touched, right after it commits.
        self.on_write: list[Callable[[Iterable[str]], None]] = []
        self._confirms: list[tuple[str, dict[str, Any], dict[str, Any], Any]] = []

    def _wrote(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        for fn in self.on_write:
            fn(ids)

    # -- writes -------------------------------------------------------------------------
    async def create(self, row: dict[str, Any], idem: tuple[str, str, str] | None = None,
                     source_action: str | None = None, note: str | None = None) -> None:
        """Insert a job, its labels, its first transition and its idempotency key, atomically.
        A key already taken raises Conflict with the existing job id in `extra`. A migration target
        (`migrated_from` set) claims its source in the same transaction: a source has one target, and a
        second claim raises Conflict naming the first target."""
        now = row["created_at"]
        row = {"version": 1, "vendor_digest": digest(row["status"]), "size": stored_size(row),
               "tes_name": tes_name_of(row), **row}

        def work(conn: Connection) -> None:
            if idem is not None:
                IdempotencyKeys.insert(conn, idem[0], idem[1], idem[2], row["id"], now)
            source = row.get("migrated_from")
            if source is not None:
                claimed = conn.execute(update(jobs).where(jobs.c.id == source, jobs.c.migrated_to.is_(None),
                                                          jobs.c.deleted_at.is_(None))
                                       .values(migrated_to=row["id"], updated_at=now, version=jobs.c.version + 1,
                                               source_action=source_action))
                if claimed.rowcount != 1:
                    taken, gone = conn.execute(select(jobs.c.migrated_to, jobs.c.deleted_at)
                                               .where(jobs.c.id == source)).one()
                    if taken is None and gone is not None:
                        raise Conflict(f"job {source} is deleted (or being deleted): nothing is migrated")
                    raise Conflict(f"job {source} is already migrated to {taken}", extra={"job_id": taken})
            # Parameters, not .values(): the statement stays the same, so its compiled form is reused.
            conn.execute(_INSERT_JOB, row)
            if row["labels"]:
                conn.execute(_INSERT_LABELS, [{"job_id": row["id"], "key": k, "value": v}
                                                  for k, v in row["labels"].items()])
            tags = tes_tags_of(row)
            if tags:
                conn.execute(_INSERT_TES_TAGS, [{"job_id": row["id"], "key": k, "value": v} for k, v in tags.items()])
            self.events.append(conn, [(row, 1, None, row["phase"], row["status"].get("vendor_phase"),
                                       note or "accepted by the gateway" if row["origin"] == "gateway"
                                       else "imported from the vendor")], row["origin"], now)

        try:
            await self.db.run(work)
            self._wrote([row["id"], *([row["migrated_from"]] if row.get("migrated_from") else [])])
        except IntegrityError as err:
            if idem is not None:
                found = await IdempotencyKeys(self.db).find(idem[0], idem[1])
                if found is not None:
                    raise Conflict("idempotency key already used", extra={"job_id": found[1],
                                                                          "body_hash": found[0]}) from err
            raise

    async def mark_deleting(self, job_id: str) -> bool:
        """Mark a job deleted before its vendor job is removed (a migration can no longer claim it); False
        when it already was."""
        def work(conn: Connection) -> bool:
            now = time.time()
            done = conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.deleted_at.is_(None)).values(
                deleted_at=now, updated_at=now, version=jobs.c.version + 1))
            return bool(done.rowcount == 1)

        marked = await self.db.run(work)
        self._wrote([job_id])
        return bool(marked)

    async def release_migration(self, source: str, target: str) -> None:
        """Let a source be migrated again after its target was refused by the vendor."""
        await self.db.run(lambda conn: conn.execute(update(jobs).where(
            jobs.c.id == source, jobs.c.migrated_to == target).values(
            migrated_to=None, source_action=None, updated_at=time.time(), version=jobs.c.version + 1)))
        self._wrote([source])

    async def confirm(self, job_id: str, status: dict[str, Any],
                      cols: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """Record that the vendor has the job (its id, `submitted`, its first status). Returns whether a
        cancel was asked for before it (read in the same transaction) and the columns as written (None
        when the row is gone). Confirmations that arrive in one turn of the event loop share one
        transaction (group commit); each caller resumes only once the commit holding its row is done."""
        done: asyncio.Future[tuple[bool, dict[str, Any] | None]] = asyncio.get_running_loop().create_future()
        self._confirms.append((job_id, status, cols, done))
        if len(self._confirms) == 1:  # the first one leads: one turn for others to join, then the write
            try:
                await asyncio.sleep(0)
            finally:
                await self._flush_confirms()
        return await done

    async def _flush_confirms(self) -> None:
        batch, self._confirms = self._confirms, []
        try:
            got = await self._confirm_rows(batch)
        except Exception:  # one bad row must not fail the others: each on its own
            for job_id, status, cols, done in batch:
                try:
                    got = await self._confirm_rows([(job_id, status, cols, done)])
                except Exception as err:
                    if not done.done():
                        done.set_exception(err)
                    continue
                if not done.done():
                    done.set_result(got[job_id])
            return
        except BaseException as err:  # the leader was cancelled mid-write: nobody may wait forever (the
            for *_, done in batch:    # rows stay pending, and pending jobs are settled by name)
                if not done.done():
                    done.set_exception(BackendUnavailable("the confirmation's write was interrupted"))
            raise err
        for job_id, _, _, done in batch:
            if not done.done():
                done.set_result(got[job_id])

    async def _confirm_rows(self, batch: list[tuple[str, dict[str, Any], dict[str, Any], Any]]
                            ) -> dict[str, tuple[bool, dict[str, Any] | None]]:
        seen: dict[str, Any] = {}
        await self.db.run(self._apply_many, [(j, st, None) for j, st, _, _ in batch], "vendor", {}, seen,
                          {j: cols for j, _, cols, _ in batch})
        self._wrote(j for j, _, _, _ in batch)
        return {j: (bool(seen.get(j, {}).get("cancel_requested")), seen.get(j, {}).get("written"))
                for j, _, _, _ in batch}

    async def set_fields(self, job_id: str, **values: Any) -> None:
        """Update columns of one job (not its phase: use apply_status)."""
        values["updated_at"] = time.time()
        stmt = update(jobs).where(jobs.c.id == bindparam("b_id")).values(
            version=jobs.c.version + 1, **{k: bindparam(f"b_{k}") for k in values})
        params = {"b_id": job_id, **{f"b_{k}": v for k, v in values.items()}}
        await self.db.run(lambda conn: conn.execute(stmt, params))
        self._wrote([job_id])

    async def apply_status(self, job_id: str, status: dict[str, Any], source: str, seen: int | None = None,
                           **extra: Any) -> bool:
        """Store a new status (source `gateway` for an action, `sync` or `vendor` for what the vendor
        said); a phase change adds a transition. With `seen`, only if the row is still at that version.
        Columns in `extra` are set whatever becomes of the status. Returns True when the phase changed."""
        changed = await self.db.run(self._apply_many, [(job_id, status, seen)], source, extra)
        self._wrote([job_id])
        return changed > 0

    async def apply_statuses(self, updates: Sequence[Update], source: str) -> int:
        """apply_status for many jobs in one transaction (a sync page): a handful of statements instead
        of four per job. Returns the phase changes."""
        if not updates:
            return 0
        changed = await self.db.run(self._apply_many, list(updates), source, {})
        self._wrote(u[0] for u in updates)
        return changed

    def _apply_many(self, conn: Connection, updates: list[Update], source: str, extra: dict[str, Any],
                    info: dict[str, Any] | None = None, per_job: dict[str, dict[str, Any]] | None = None) -> int:
        now = time.time()
        action = source == "gateway"
        q = _CURRENT if self.db.is_sqlite else _CURRENT_LOCKED
        current = {r[0]: r for r in conn.execute(q, {"ids": [u[0] for u in updates]})}
        if info is not None:
            info.update({job_id: {"cancel_requested": r[8]} for job_id, r in current.items()})
        params: list[dict[str, Any]] = []
        items: list[tuple[Transition, str]] = []
        for job_id, status, seen in updates:
            r = current.get(job_id)
            if r is None:
                continue
            old = r[3] or {}
            new = self._next_status(old, status, r[1], bool(r[2]), action)
            cols = {**extra, **(per_job or {}).get(job_id, {})}
            x = {f"x_{k}": v for k, v in cols.items()}
            if new is None or (seen is not None and seen != r[7]):
                self.skipped += 1
                if cols:
                    params.append({"b_id": job_id, "b_phase": r[1], "b_terminal": bool(r[2]), "b_status": old,
                                   "b_digest": digest(old), "b_now": now, **x})
                continue
            forced = None
            if r.retry and source != "gateway":  # managed recovery decides, in this transaction
                new, more, ended, forced = self._recover(r, new, now, cols)
                cols.update(more)
                x = {f"x_{k}": v for k, v in cols.items()}
                if ended is not None:
                    AttemptRows.insert(conn, ended)
            params.append({"b_id": job_id, "b_phase": new["phase"], "b_terminal": bool(new.get("terminal")),
                           "b_status": new, "b_digest": digest(new), "b_now": now, **x})
            if info is not None:
                info[job_id]["written"] = {"phase": new["phase"], "terminal": bool(new.get("terminal")),
                                           "status": new, "version": r[7] + 1, "updated_at": now, **cols}
            job = {"id": job_id, "tenant": r[4], "name": r[5], "backend": r[6], "reason": new.get("reason")}
            if new["phase"] != r[1]:
                items.append(((job, 0, r[1], new["phase"], new.get("vendor_phase"), new.get("message")),
                              "transition"))
            elif forced is not None:  # an attempt ended and the next follows, the phase unchanged
                items.append(((job, 0, r[1], r[1], new.get("vendor_phase"), forced), "change"))
            elif source != "vendor" and not r[2] and (what := _what_changed(old, new)):
                # (A confirmation's status is the vendor's first word on the job, not a change of it.)
                items.append(((job, 0, r[1], r[1], new.get("vendor_phase"), what), "change"))
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for p in params:  # one statement per set of extra columns (a batch has one set, as a rule)
            by_columns.setdefault(tuple(sorted(k[2:] for k in p if k.startswith("x_"))), []).append(p)
        for columns, group in by_columns.items():
            conn.execute(_write_status(columns), group)
        if items:
            seqs = self.events.last_seqs(conn, [t[0]["id"] for t, _ in items])
            for kind in ("transition", "change"):
                batch = [(t[0], seqs.get(t[0]["id"], 0) + 1, *t[2:]) for t, k in items if k == kind]
                if batch:
                    self.events.append(conn, batch, source, now, kind=kind)
        return sum(1 for _, k in items if k == "transition")

    @staticmethod
    def _recover(r: Any, new: dict[str, Any], now: float, cols: dict[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, str | None]:
        """What a vendor's status means for a job with retry rules (`cols`: what the write sets besides): (status
        to store, columns to set, the
        ended attempt's row or None, the words of an attempt change or None). A failed attempt the rules
        retry ends here and the job waits for its next attempt (submit_state `recovering`, made by the
        recovery loop); one they do not ends the job, with `retry_outcome` saying why."""
        n = int(r.attempt or 1)
        new = {**new, "attempt": n}
        policy = policy_of(r.retry)
        if policy is None:
            return new, {}, None, None
        if new["phase"] == "FAILED" and new.get("terminal"):
            decision = decide(policy, failure_of(new), n, float(r.created_at), now, bool(r.cancel_requested))
            if not decision.retry:
                message = f"{new.get('message') or 'failed'} ({decision.message})"
                return {**new, "retry_outcome": decision.outcome, "message": message}, {}, None, None
            # (A confirmation's columns name the vendor job this status is of: the row does not yet.)
            ended = {**ended_attempt(r, new, now, stop_owed=False),
                     **{k: cols[k] for k in ("backend_job_id", "vendor_kind") if cols.get(k) is not None}}
            return recovering_status(new, decision.message, n + 1), \
                recovering_columns(n + 1, now), ended, decision.message
        old_reason = (r.status or {}).get("reason")
        if (new["phase"] == "QUEUED" and new.get("reason") == "preempted" and old_reason != "preempted"
                and policy.failover and "preempted" in policy.on and not r.cancel_requested):
            # The vendor requeued it (Run:ai): the recovery loop moves it if another backend has room now.
            return new, {"recover_at": now}, None, None
        return new, {}, None, None

    @staticmethod
    def _next_status(old: dict[str, Any], status: dict[str, Any], phase: str, terminal: bool,
                     action: bool) -> dict[str, Any] | None:
        """The status to store over `old`, or None when nothing may be written."""
        if terminal:  # an ended job keeps its phase; only a stale flag may be cleared
            return {**old, "stale": False} if status.get("stale") is False and old.get("stale") else None
        if not allowed(phase, status["phase"], action):
            return None
        new = {**status, **{k: old[k] for k in ACTIVITY_KEYS if k in old}}
        if new["phase"] != "RUNNING":  # idle describes a running job only
            new.update(idle=False, idle_since=None)
        return new

    async def set_activity(self, job_id: str, values: dict[str, Any], mark: tuple[str, str] | None = None) -> bool:
        """Store what the idle watch observed of a running job (status keys in ACTIVITY_KEYS) and, with
        `mark` (kind, message), append an idle/active event in the same transaction. Nothing is written
        when the job is no longer RUNNING. Returns whether it was written."""
        def work(conn: Connection) -> bool:
            q = select(jobs.c.phase, jobs.c.terminal, jobs.c.status, jobs.c.tenant, jobs.c.name, jobs.c.backend) \
                .where(jobs.c.id == job_id)
            if not self.db.is_sqlite:
                q = q.with_for_update()
            r = conn.execute(q).first()
            if r is None or r[1] or r[0] != "RUNNING":
                return False
            status = {**(r[2] or {}), **{k: v for k, v in values.items() if k in ACTIVITY_KEYS}}
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(status=status, updated_at=time.time(),
                                                                        version=jobs.c.version + 1))
            if mark is not None:
                seq = self.events.last_seqs(conn, [job_id]).get(job_id, 0) + 1
                job = {"id": job_id, "tenant": r[3], "name": r[4], "backend": r[5]}
                self.events.append(conn, [(job, seq, "RUNNING", "RUNNING", None, mark[1])], "idle-watch",
                                   time.time(), kind=mark[0])
            return True

        written = await self.db.run(work)
        self._wrote([job_id])
        return written

    async def mark_stale(self, backend: str, stale: bool) -> int:
        """Flag (or clear) every live job of a backend as stale; phases and observed_at stay."""
        def work(conn: Connection) -> list[str]:
            rows = conn.execute(select(jobs.c.id, jobs.c.status).where(
                jobs.c.backend == backend, jobs.c.terminal.is_(False), jobs.c.deleted_at.is_(None))).all()
            flip = [{"b_id": job_id, "b_status": {**(status or {}), "stale": stale}} for job_id, status in rows
                    if bool((status or {}).get("stale")) != stale]
            for f in flip:
                f["b_digest"] = digest(f["b_status"])
            if flip:
                conn.execute(update(jobs).where(jobs.c.id == bindparam("b_id")).values(
                    status=bindparam("b_status"), vendor_digest=bindparam("b_digest"),
                    version=jobs.c.version + 1), flip)
            return [f["b_id"] for f in flip]

        flipped = await self.db.run(work)
        self._wrote(flipped)
        return len(flipped)

    async def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Bulk-insert job rows as they are (benchmark and test set-up)."""
        rows = [{"vendor_digest": digest(r["status"]), "size": stored_size(r), "tes_name": tes_name_of(r), **r}
                for r in rows]
        for start in range(0, len(rows), 5000):
            chunk = rows[start:start + 5000]
            await self.db.run(lambda conn, c=chunk: conn.execute(_INSERT_JOB, c))
            self._wrote(r["id"] for r in chunk)

    # -- reads --------------------------------------------------------------------------
    async def get(self, job_id: str) -> dict[str, Any] | None:
        """One job row, as stored now."""
        return await self.db.run(lambda conn: _first(conn.execute(_GET, {"id": job_id}).mappings().first()),
                                 write=False)

    async def version(self, job_id: str) -> int | None:
        """A job's row version (None when there is no such job): one primary-key lookup, no JSON decoded."""
        v = await self.db.run(lambda conn: conn.execute(_VERSION, {"id": job_id}).scalar(), write=False)
        return None if v is None else int(v)

    async def page(self, f: ListFilters, limit: int, after: str | None,
                   budget: int | None = None) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, keyset-paginated on the (time-ordered) id: at most `limit` rows, and no more than fit
        in `budget` bytes of spec and TES task (always one). Returns (rows, whether the budget cut the page).
        The ids and sizes are read first, so no row beyond the budget is ever read or decoded."""
        conds = self._conds(f)
        if after:
            conds.append(jobs.c.id < after)
        q = select(jobs).where(*conds).order_by(jobs.c.id.desc()).limit(limit)
        if budget is None:
            return await self._scan(q), False
        if self.db.is_sqlite:
            # SQLite keeps a row's columns together (a big spec in overflow pages): a query for the sizes alone
            # would read every spec. One cursor, read a few rows at a time, stops at the budget instead.
            used = [0]

            def fits(row: dict[str, Any]) -> bool:
                used[0] += row["size"] or 0
                return used[0] <= budget

            return await self.db.scan_until(q, 4, fits)
        # PostgreSQL keeps large values apart (TOAST): the ids and sizes are read without them.
        sized = select(jobs.c.id, jobs.c.size).where(*conds).order_by(jobs.c.id.desc()).limit(limit)
        found = await self.db.run(lambda conn: conn.execute(sized).all(), write=False)
        keep: list[str] = []
        total = 0
        for job_id, size in found:
            if keep and total + (size or 0) > budget:
                break
            keep.append(job_id)
            total += size or 0
        if not keep:
            return [], False
        rows = await self._scan(select(jobs).where(jobs.c.id.in_(keep)).order_by(jobs.c.id.desc()))
        return rows, len(keep) < len(found)

    async def usage_rows(self, f: ListFilters, since: float, until: float) -> list[dict[str, Any]]:
        """The jobs `f` selects that may have run between `since` and `until` (for GPU-hours)."""
        conds = [*self._conds(f), jobs.c.created_at <= until, jobs.c.submit_state == "submitted",
                 or_(jobs.c.terminal.is_(False), jobs.c.updated_at >= since)]
        q = select(jobs.c.id, jobs.c.tenant, jobs.c.backend, jobs.c.project, jobs.c.labels, jobs.c.spec,
                   jobs.c.status, jobs.c.phase, jobs.c.attempt, jobs.c.attempt_at, jobs.c.created_at,
                   jobs.c.updated_at, jobs.c.terminal, jobs.c.vendor_name, jobs.c.backend_job_id).where(*conds)
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
        if f.tes_name_prefix is not None:  # case-sensitive in both stores (SQLite's LIKE ignores case)
            conds += [jobs.c.tes_name.is_not(None),
                      func.substr(jobs.c.tes_name, 1, len(f.tes_name_prefix)) == f.tes_name_prefix]
        for k, tv in f.tes_tags:
            tag = [tes_tags.c.job_id == jobs.c.id, tes_tags.c.key == k]
            conds.append(exists().where(*tag, *([tes_tags.c.value == tv] if tv is not None else [])))
        if f.id_prefix:  # (a range on the primary key, not LIKE: the index is used)
            conds += [jobs.c.id >= f.id_prefix, jobs.c.id < f.id_prefix + "~"]
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
        # No status: its digest says whether a vendor's word is new, and rows of plain values are not
        # tracked by the cyclic GC (10,000 decoded statuses made its collections take tens of ms).
        return await self._scan(self._live_base(backend))

    @staticmethod
    def _live_base(backend: str) -> Any:
        return select(jobs.c.id, jobs.c.backend_job_id, jobs.c.vendor_name, jobs.c.vendor_kind, jobs.c.phase,
                      jobs.c.vendor_digest, jobs.c.cancel_requested, jobs.c.created_at, jobs.c.version).where(
            *JobRows._live(backend))

    @staticmethod
    def _live(backend: str) -> list[Any]:
        """What makes a job live on a backend: submitted, not terminal, not deleted."""
        return [jobs.c.backend == backend, jobs.c.terminal.is_(False), jobs.c.submit_state == "submitted",
                jobs.c.deleted_at.is_(None)]

    async def live_of(self, backend: str, vendor_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The live rows (as `live` reads them) of these vendor job ids: a delta's news, looked up by index
        instead of reading every live job."""
        out: list[dict[str, Any]] = []
        ids = list(dict.fromkeys(vendor_ids))
        for start in range(0, len(ids), 500):
            q = self._live_base(backend).where(jobs.c.backend_job_id.in_(ids[start:start + 500]))
            out += await self._scan(q)
        return out

    async def acting(self, backend: str, phases: Sequence[str]) -> list[dict[str, Any]]:
        """The live rows of a backend that the gateway is acting on: a cancel asked, or in one of `phases`."""
        q = self._live_base(backend).where(or_(jobs.c.cancel_requested.is_(True), jobs.c.phase.in_(list(phases))))
        return await self._scan(q)

    async def has_live(self, backend: str) -> bool:
        """Whether a backend has any live job (one small indexed query)."""
        q = select(jobs.c.id).where(*self._live(backend)).limit(1)
        return await self.db.run(lambda conn: conn.execute(q).first() is not None, write=False)

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
        conds = [jobs.c.phase == "RUNNING", jobs.c.submit_state == "submitted", jobs.c.deleted_at.is_(None)]
        if backend:
            conds.append(jobs.c.backend == backend)
        return await self._scan(select(jobs.c.id, jobs.c.backend, jobs.c.backend_job_id, jobs.c.vendor_name,
                                       jobs.c.vendor_kind, jobs.c.status, jobs.c.spec, jobs.c.name, jobs.c.project,
                                       jobs.c.tenant, jobs.c.origin).where(*conds))

    async def pending(self, backend: str | None = None, older_than: float = 0.0) -> list[dict[str, Any]]:
        """Jobs accepted but not yet confirmed on the vendor."""
        # (The current attempt's age: a job's next attempt is as new as a fresh submit.)
        conds = [jobs.c.submit_state == "pending",
                 func.coalesce(jobs.c.attempt_at, jobs.c.created_at) <= time.time() - older_than]
        if backend:
            conds.append(jobs.c.backend == backend)
        q = select(jobs).where(*conds).order_by(jobs.c.id)
        return await self.db.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def known_vendor_ids(self, backend: str) -> set[str]:
        """Vendor ids of every job of a backend the store has."""
        q = select(jobs.c.backend_job_id).where(jobs.c.backend == backend, jobs.c.backend_job_id.is_not(None)) \
            .union_all(select(attempts.c.backend_job_id).where(attempts.c.backend == backend,
                                                              attempts.c.backend_job_id.is_not(None)))
        return await self.db.run(lambda conn: {r[0] for r in conn.execute(q)}, write=False)

    # -- attempts (managed recovery; the rules are in gateway.core.recovery) -----------------
    async def recovery_due(self, now: float) -> list[dict[str, Any]]:
        """Jobs the recovery loop should look at now (by the index on recover_at, a handful)."""
        q = select(jobs).where(jobs.c.recover_at <= now).order_by(jobs.c.recover_at).limit(200)
        return await self.db.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def begin_attempt(self, job_id: str, cols: dict[str, Any], note: str) -> bool:
        """Store the next attempt of a recovering job (its backend, vendor name, placement...) as a pending
        submission, unless a cancel came first or another replica did it: True when this call did."""
        def work(conn: Connection) -> bool:
            now = time.time()
            done = conn.execute(update(jobs).where(
                jobs.c.id == job_id, jobs.c.submit_state == "recovering", jobs.c.cancel_requested.is_(False))
                .values(**cols, submit_state="pending", recover_at=None, attempt_at=now, updated_at=now,
                        version=jobs.c.version + 1))
            if done.rowcount != 1:
                return False
            r = conn.execute(select(jobs.c.id, jobs.c.tenant, jobs.c.name, jobs.c.backend, jobs.c.phase,
                                    jobs.c.status).where(jobs.c.id == job_id)).first()
            assert r is not None
            seq = self.events.last_seqs(conn, [job_id]).get(job_id, 0) + 1
            job = {"id": r.id, "tenant": r.tenant, "name": r.name, "backend": r.backend, "reason": "recovering"}
            self.events.append(conn, [(job, seq, r.phase, r.phase, None, note)], "gateway", now, kind="attempt")
            return True

        began = await self.db.run(work)
        self._wrote([job_id])
        return bool(began)

    async def end_attempt(self, job_id: str, seen: int, message: str) -> bool:
        """End the current attempt of a job its vendor keeps requeued (moved away by failover): recorded with
        its vendor job owed a stop, the job recovering. Only if the row is still at version `seen`."""
        def work(conn: Connection) -> bool:
            q = _CURRENT if self.db.is_sqlite else _CURRENT_LOCKED
            r = conn.execute(q, {"ids": [job_id]}).first()
            if r is None or r.version != seen or r.terminal or r.cancel_requested:
                return False
            now = time.time()
            n = int(r.attempt or 1)
            status = {**(r.status or {}), "attempt": n}
            AttemptRows.insert(conn, ended_attempt(r, status, now, stop_owed=True))
            new = recovering_status(status, message, n + 1)
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                phase="QUEUED", terminal=False, status=new, vendor_digest=digest(new), updated_at=now,
                version=jobs.c.version + 1, **recovering_columns(n + 1, now)))
            seq = self.events.last_seqs(conn, [job_id]).get(job_id, 0) + 1
            job = {"id": r.id, "tenant": r.tenant, "name": r.name, "backend": r.backend, "reason": "recovering"}
            self.events.append(conn, [(job, seq, r.phase, "QUEUED", None, message)], "gateway", now,
                               kind="transition" if r.phase != "QUEUED" else "change")
            return True

        ended = await self.db.run(work)
        self._wrote([job_id])
        return bool(ended)

    async def cancel_recovering(self, job_id: str, status: dict[str, Any]) -> bool:
        """End a job between attempts (a cancel or delete came): CANCELLED, no further attempt. False when
        its next attempt was already stored (the caller cancels that as any pending submission)."""
        def work(conn: Connection) -> bool:
            q = select(jobs.c.submit_state).where(jobs.c.id == job_id)
            if not self.db.is_sqlite:
                q = q.with_for_update()
            if conn.execute(q).scalar() != "recovering":
                return False
            self._apply_many(conn, [(job_id, status, None)], "gateway",
                             {"submit_state": "cancelled", "recover_at": None})
            return True

        done = await self.db.run(work)
        self._wrote([job_id])
        return bool(done)

    async def waiting(self, now: float) -> list[dict[str, Any]]:
        """Jobs QUEUED on their vendor (confirmed there, not moved away, not deleted) past their move_after:
        what rebalance looks at (a handful, found by the index, not every QUEUED job)."""
        # Only move_after in SQL, so that its index is the one used; the caller looks at the phase (and
        # clears move_after of a job that started: it never moves then).
        q = select(jobs).where(jobs.c.move_after <= now)
        return await self.db.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def owing_source_actions(self, older_than: float = 0.0) -> list[dict[str, Any]]:
        """Migration sources whose action (cancel, suspend) is not done yet, last touched before `older_than`
        seconds ago."""
        q = select(jobs).where(jobs.c.source_action.in_(("cancel", "suspend")),  # (an equality: the index is used)
                               jobs.c.updated_at <= time.time() - older_than)
        return await self.db.run(lambda conn: [dict(r) for r in conn.execute(q).mappings()], write=False)

    async def count_in_phase(self, backend: str, phase: str) -> int:
        """How many jobs (not deleted) of a backend are in a phase."""
        q = select(func.count()).select_from(jobs).where(jobs.c.backend == backend, jobs.c.phase == phase,
                                                         jobs.c.deleted_at.is_(None))
        return await self.db.run(lambda conn: int(conn.execute(q).scalar() or 0), write=False)

    async def phase_counts(self) -> list[tuple[str, str, int]]:
        """(backend, phase, count) of jobs not deleted, for /metrics."""
        q = select(jobs.c.backend, jobs.c.phase, func.count()).where(jobs.c.deleted_at.is_(None)) \
            .group_by(jobs.c.backend, jobs.c.phase)
        return await self.db.run(lambda conn: [(r[0], r[1], int(r[2])) for r in conn.execute(q)], write=False)



def stored_size(row: dict[str, Any]) -> int:
    """The bytes a list answer carries of a job beyond its fixed fields: its spec and TES task as JSON."""
    return sum(len(json.dumps(row[k], separators=(",", ":"), default=str)) for k in ("spec", "tes_task")
               if row.get(k) is not None)


def recovering_status(last: dict[str, Any], message: str, next_attempt: int) -> dict[str, Any]:
    """The status of a job between attempts: QUEUED, reason `recovering` (the last attempt's end in words)."""
    return {"phase": "QUEUED", "terminal": False, "message": message, "reason": "recovering",
            "reason_message": message, "observed_at": last.get("observed_at"), "attempt": next_attempt,
            "exit_code": None}


def recovering_columns(next_attempt: int, now: float) -> dict[str, Any]:
    """The row's columns once an attempt has ended and the next is owed (the recovery loop makes it)."""
    return {"submit_state": "recovering", "backend_job_id": None, "attempt": next_attempt, "attempt_at": now,
            "recover_at": now}


def _first(r: Any) -> dict[str, Any] | None:
    return dict(r) if r is not None else None


def _what_changed(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The vendor-reported fields that differ, as `field: old -> new; ...` (None when none do)."""
    a, b = vendor_view(old), vendor_view(new)
    keys = sorted(k for k in a.keys() | b.keys() if k not in ("phase", "terminal") and a.get(k) != b.get(k))
    return "; ".join(f"{k}: {a.get(k)} -> {b.get(k)}" for k in keys) or None
