"""Job operations behind the HTTP API: submit (write first, then call the vendor), read, act."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from gateway.core.adapter import Adapter, Capability, Handle
from gateway.core.config import Config
from gateway.core.errors import (
    AmbiguousCreate,
    BackendError,
    BackendUnavailable,
    Conflict,
    NotFound,
    ValidationError,
)
from gateway.core.ids import new_job_id
from gateway.core.models import DryRun, Job, JobSpec, JobStatus, Phase, ReportEntry, parse_spec
from gateway.core.translation import Translation, enforce_strict
from gateway.store.jobs import ListFilters, Store, decode_token, encode_token

log = structlog.get_logger(__name__)

COMPLETION_BATCH_SECONDS = 0.01
JSON_CACHE_SIZE = 10_000
SUSPENDABLE = {Phase.QUEUED, Phase.STARTING, Phase.RUNNING}
RESUMABLE = {Phase.SUSPENDED, Phase.SUSPENDING}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant and its role."""

    tenant: str
    role: str = "user"
    projects: tuple[str, ...] = ()

    @property
    def admin(self) -> bool:
        return self.role == "admin"


@dataclass
class SubmitResult:
    """A submitted (or replayed) job."""

    job: Job
    replayed: bool = False


def _dt(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def to_job(row: dict[str, Any]) -> Job:
    """A store row as the API's Job."""
    status = dict(row["status"] or {})
    if status.get("observed_at") is not None and not isinstance(status["observed_at"], str):
        status["observed_at"] = _dt(status["observed_at"])
    return Job(id=row["id"], name=row["name"], backend=row["backend"], backend_job_id=row["backend_job_id"],
               vendor_name=row["vendor_name"], project=row["project"], spec=row["spec"],
               status=JobStatus.model_validate(status), labels=row["labels"] or {},
               created_at=_dt(row["created_at"]) or datetime.now(UTC),
               updated_at=_dt(row["updated_at"]) or datetime.now(UTC),
               report=[ReportEntry.model_validate(e) for e in row["report"] or []],
               origin=row["origin"], tenant=row["tenant"], migrated_from=row["migrated_from"],
               migrated_to=row["migrated_to"], deleted=row["deleted_at"] is not None)


def status_json(status: JobStatus) -> dict[str, Any]:
    """A status as stored (JSON-safe)."""
    return status.model_dump(mode="json")


def handle_of(row: dict[str, Any]) -> Handle:
    """The vendor handle of a submitted job."""
    return Handle(row["backend_job_id"], row["vendor_name"], row["vendor_kind"] or "training")


def body_hash(raw: Any, strict: bool) -> str:
    """Fingerprint of a submission, for idempotency keys."""
    canon = json.dumps({"spec": raw, "strict": strict}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass
class JobService:
    """The gateway's job operations."""

    config: Config
    store: Store
    adapters: dict[str, Adapter]
    inline_submit_seconds: float = 15.0
    _inflight: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _completions: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    on_submitted: dict[str, asyncio.Event] = field(default_factory=dict)
    _json: dict[str, tuple[dict[str, Any], bytes]] = field(default_factory=dict)
    _flushing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def adapter(self, backend: str) -> Adapter:
        """The adapter of a configured backend (a 422 naming `backend` otherwise)."""
        self.config.backend(backend)
        return self.adapters[backend]

    # -- translation -------------------------------------------------------------------
    def translate(self, raw: Any, strict: bool, job_id: str) -> tuple[JobSpec, Translation]:
        """Validate and translate a submission."""
        spec = parse_spec(raw)
        tr = self.adapter(spec.backend).translate(spec, job_id)
        if strict:
            enforce_strict(tr.report)
        return spec, tr

    def dry_run(self, raw: Any, strict: bool) -> DryRun:
        """What a submit would send, and the report; nothing is stored or sent."""
        spec, tr = self.translate(raw, strict, new_job_id())
        return tr.dry_run(spec.backend)

    # -- submit -------------------------------------------------------------------------
    async def submit(self, who: Principal, raw: Any, strict: bool = False,
                     idempotency_key: str | None = None, migrated_from: str | None = None,
                     job_id: str | None = None, extra_report: list[ReportEntry] | None = None) -> SubmitResult:
        """Accept a job: store it first (QUEUED, no vendor id), then create it on the vendor."""
        idem = None
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 255:
                raise ValidationError("Idempotency-Key must be 1-255 characters",
                                      errors=[{"loc": ["header", "Idempotency-Key"], "msg": "1-255 characters"}])
            digest = body_hash(raw, strict)
            found = await self.store.idempotent(who.tenant, idempotency_key)
            if found is not None:
                return await self._replay(found, digest)
            idem = (who.tenant, idempotency_key, digest)
        job_id = job_id or new_job_id()
        spec, tr = self.translate(raw, strict, job_id)
        now = time.time()
        row = {
            "id": job_id, "tenant": who.tenant, "name": spec.name, "backend": spec.backend,
            "project": tr.project, "vendor_name": tr.vendor_name, "vendor_kind": tr.kind, "backend_job_id": None,
            "spec": spec.model_dump(mode="json", exclude_none=True, exclude_unset=True),
            "report": [e.model_dump() for e in (extra_report or []) + tr.report], "labels": spec.labels or {},
            "phase": Phase.QUEUED.value, "terminal": False, "status": status_json(JobStatus(phase=Phase.QUEUED)),
            "origin": "gateway", "submit_state": "pending", "submit_error": None, "cancel_requested": False,
            "created_at": now, "updated_at": now, "deleted_at": None, "migrated_from": migrated_from,
            "migrated_to": None,
        }
        try:
            await self.store.create_job(row, idem)
        except Conflict as err:
            assert idem is not None
            return await self._replay((str(err.extra["body_hash"]), str(err.extra["job_id"])), idem[2])
        log.info("job_accepted", job_id=job_id, backend=spec.backend, vendor_name=tr.vendor_name)
        await self._submit_now(job_id, tr, self.inline_submit_seconds, raise_rejection=True)
        return SubmitResult(await self.get_any(job_id))

    async def _replay(self, found: tuple[str, str], digest: str) -> SubmitResult:
        if found[0] != digest:
            raise Conflict("this Idempotency-Key was used with a different request body",
                           extra={"job_id": found[1]})
        return SubmitResult(await self.get_any(found[1]), replayed=True)

    async def _submit_now(self, job_id: str, tr: Translation, deadline: float, raise_rejection: bool) -> None:
        """Create on the vendor; an unknown outcome stays pending for the reconciler."""
        if job_id in self._inflight:
            return
        self._inflight.add(job_id)
        row = await self.store.get(job_id)
        assert row is not None
        adapter = self.adapters[row["backend"]]
        try:
            vj = await adapter.submit(tr, deadline)
        except AmbiguousCreate as err:
            log.warning("submit_unconfirmed", job_id=job_id, reason=err.detail)
            self._inflight.discard(job_id)
            self._later(self._finish_pending(job_id))
            return
        except BackendError as err:
            self._inflight.discard(job_id)
            await self._reject(job_id, err)
            if raise_rejection:
                err.extra["job_id"] = job_id
                raise
            return
        except BaseException:
            self._inflight.discard(job_id)
            raise
        try:
            await self._adopted(job_id, vj.handle, vj.status, write_behind=True)
        finally:
            self._inflight.discard(job_id)

    async def _adopted(self, job_id: str, handle: Handle, status: JobStatus, write_behind: bool = False) -> None:
        row = await self.store.get(job_id)
        if row is None:
            return
        wake = self.on_submitted.get(row["backend"])
        if wake is not None:
            wake.set()  # a new live job: poll soon rather than at the quiet interval
        cols = {"backend_job_id": handle.backend_job_id, "vendor_kind": handle.vendor_kind,
                "submit_state": "submitted"}
        st = status_json(status)
        # Single-writer SQLite: the row cache is the truth for this process, so the completion can be
        # written just behind the response, batched. A crash before that write leaves the job pending,
        # and pending jobs are settled by the vendor-name lookup: nothing is lost or doubled.
        if write_behind and self.store.remember(job_id, phase=st["phase"], terminal=bool(st["terminal"]),
                                                status=st, **cols):
            self._completions.append((job_id, st, cols))
            if len(self._completions) == 1:
                self._later(self.flush_completions(delay=COMPLETION_BATCH_SECONDS))
        else:
            await self.store.apply_status(job_id, st, "vendor", **cols)
        if row["cancel_requested"] and not st["terminal"]:
            await self.flush_completions()
            adopted = await self.store.get(job_id)  # now with the vendor id
            if adopted is not None:
                await self._vendor_cancel(adopted)

    async def flush_completions(self, delay: float = 0.0) -> None:
        """Write the submit completions kept in memory (one transaction for all of them)."""
        if delay:
            await asyncio.sleep(delay)  # let a few more arrive: one commit for the lot
        async with self._flushing:
            batch, self._completions = self._completions, []
            if not batch:
                return
            try:
                await self.store.apply_statuses([(j, st) for j, st, _ in batch], "vendor",
                                                extra={j: cols for j, _, cols in batch}, keep_cache=True)
            except Exception as err:
                log.error("completion_write_failed", count=len(batch), error=str(err))
                self.store._forget([j for j, _, _ in batch])  # the store says pending: recovery settles them

    async def _reject(self, job_id: str, err: BackendError) -> None:
        status = JobStatus(phase=Phase.FAILED, terminal=True, message=f"rejected by the backend: {err.detail}",
                           observed_at=datetime.now(UTC))
        await self.store.apply_status(job_id, status_json(status), "gateway", submit_state="rejected",
                                      submit_error=err.detail)
        log.warning("submit_rejected", job_id=job_id, error=err.detail)

    def _later(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_pending(self, job_id: str, delay: float = 1.0) -> None:
        """Keep resolving one pending submission until it is settled (or the gateway stops)."""
        while True:
            await asyncio.sleep(delay)
            try:
                if await self.resolve_pending(job_id):
                    return
            except Exception as err:
                log.warning("pending_resolve_failed", job_id=job_id, error=str(err))
            delay = min(delay * 2, 30.0)

    async def resolve_pending(self, job_id: str) -> bool:
        """Settle a submission whose outcome is unknown: adopt the vendor job if it exists, create it
        if it certainly does not. True once settled."""
        if job_id in self._inflight:
            return False
        row = await self.store.get(job_id)
        if row is None or row["submit_state"] != "pending":
            return True
        adapter = self.adapters.get(row["backend"])
        if adapter is None:
            return False
        self._inflight.add(job_id)
        try:
            try:
                found = await adapter.find_by_name(row["vendor_name"], row["project"])
            except BackendUnavailable:
                return False
            if found is not None:
                log.info("pending_adopted", job_id=job_id, vendor_id=found.handle.backend_job_id)
                await self._adopted(job_id, found.handle, found.status)
                return True
            if row["cancel_requested"]:
                await self.store.apply_status(job_id, status_json(JobStatus(
                    phase=Phase.CANCELLED, terminal=True, message="cancelled before it reached the backend",
                    observed_at=datetime.now(UTC))), "gateway", submit_state="cancelled")
                return True
            tr = adapter.translate(JobSpec.model_validate(row["spec"]), job_id)
        finally:
            self._inflight.discard(job_id)
        await self._submit_now(job_id, tr, self.config.backend(row["backend"]).submit_deadline,
                               raise_rejection=False)
        fresh = await self.store.get(job_id)
        return fresh is None or fresh["submit_state"] != "pending"

    async def recover(self) -> int:
        """At start-up: settle every submission a previous process left in flight."""
        rows = await self.store.pending()
        for row in rows:
            if row["backend"] in self.adapters:
                self._later(self._finish_pending(row["id"], delay=0.0))
        if rows:
            log.info("recovering_pending_submissions", count=len(rows))
        return len(rows)

    async def close(self) -> None:
        """Stop background work; write what is still kept in memory."""
        await self.flush_completions()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush_completions()

    # -- reads --------------------------------------------------------------------------
    async def get_any(self, job_id: str) -> Job:
        """A job by id regardless of tenant (internal)."""
        row = await self.store.get(job_id)
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return to_job(row)

    def _visible(self, who: Principal, row: dict[str, Any]) -> bool:
        if who.admin or row["tenant"] == who.tenant:
            return True
        return row["origin"] == "external" and row["project"] in who.projects

    async def _row(self, who: Principal, job_id: str) -> dict[str, Any]:
        row = await self.store.get(job_id)
        if row is None or not self._visible(who, row):
            raise NotFound(f"job {job_id} not found")
        return row

    async def get(self, who: Principal, job_id: str) -> Job:
        """One job the caller may see (another tenant's job is a 404)."""
        return to_job(await self._row(who, job_id))

    async def get_json(self, who: Principal, job_id: str) -> bytes:
        """get() as response bytes. In SQLite mode the store hands back the same row object until the
        job changes, so the bytes made for that object are reused (PostgreSQL rows are new each time)."""
        row = await self._row(who, job_id)
        hit = self._json.get(job_id)
        if hit is not None and hit[0] is row:
            return hit[1]
        body = to_job(row).model_dump_json().encode()
        if len(self._json) >= JSON_CACHE_SIZE:
            self._json.pop(next(iter(self._json)))
        self._json[job_id] = (row, body)
        return body

    async def list_jobs(self, who: Principal, f: ListFilters, limit: int, page_token: str | None) -> tuple[list[Job],
                                                                                                 str | None]:
        """A page of jobs, newest first."""
        if not who.admin:
            f.tenant = who.tenant
            f.external_projects = list(who.projects)
        after = decode_token(page_token) if page_token else None
        rows = await self.store.list_jobs(f, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        token = encode_token(rows[-1]["id"]) if more and rows else None
        return [to_job(r) for r in rows], token

    async def events(self, who: Principal, job_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """A job's phase transitions, oldest first."""
        await self._row(who, job_id)
        return [{"kind": "transition", "seq": t["seq"], "from_phase": t["from_phase"], "to_phase": t["to_phase"],
                 "vendor_phase": t["vendor_phase"], "message": t["message"], "source": t["source"],
                 "at": _dt(t["at"])} for t in await self.store.transitions(job_id, after_seq)]

    async def vendor_events(self, who: Principal, job_id: str) -> list[dict[str, Any]]:
        """The vendor's own events for a job, marked by source (empty when it has none or cannot say)."""
        row = await self._row(who, job_id)
        adapter = self.adapter(row["backend"])
        if not row["backend_job_id"] or Capability.EVENTS in adapter.unsupported:
            return []
        out = []
        for e in await adapter.events(handle_of(row)):
            try:
                at: datetime | None = datetime.fromisoformat(str(e.get("time")))
            except ValueError:
                at = None
            out.append({"kind": "vendor", "source": e.get("source") or row["backend"], "at": at,
                        "type": e.get("type"), "reason": e.get("reason"), "message": e.get("message")})
        return out

    async def logs(self, who: Principal, job_id: str, task: str | None, tail: int | None) -> dict[str, Any]:
        """A preview of the job's log where the backend can give one (a 409 saying why otherwise)."""
        row = await self._row(who, job_id)
        adapter = self.adapter(row["backend"])
        adapter.require(Capability.LOGS)
        if not row["backend_job_id"]:
            raise Conflict(f"job {job_id} is not on the backend yet; no logs")
        chunk = await adapter.logs(handle_of(row), task, tail)
        return {"job_id": job_id, "task": chunk.task, "content": chunk.content, "full_size": chunk.full_size}

    # -- actions ------------------------------------------------------------------------
    async def cancel(self, who: Principal, job_id: str) -> Job:
        """Stop a job for good; the record stays."""
        await self.flush_completions()
        row = await self._row(who, job_id)
        adapter = self.adapter(row["backend"])
        adapter.require(Capability.CANCEL)
        if row["terminal"]:
            raise Conflict(f"job {job_id} is already {row['phase']}")
        await self.store.set_fields(job_id, cancel_requested=True)
        if row["submit_state"] == "pending":
            self._later(self.resolve_pending(job_id))
            return to_job(await self._row(who, job_id))
        await self._vendor_cancel(row)
        return to_job(await self._row(who, job_id))

    async def _vendor_cancel(self, row: dict[str, Any]) -> None:
        await self.adapters[row["backend"]].cancel(handle_of(row))
        status = JobStatus.model_validate(row["status"])
        if status.phase not in (Phase.CANCELLING, Phase.CANCELLED):
            status = status.model_copy(update={"phase": Phase.CANCELLING, "terminal": False,
                                               "message": "cancel requested"})
            await self.store.apply_status(row["id"], status_json(status), "gateway")

    async def suspend(self, who: Principal, job_id: str) -> Job:
        """Pause a job where the backend allows it."""
        return await self._pause(who, job_id, Capability.SUSPEND, SUSPENDABLE, Phase.SUSPENDING)

    async def resume(self, who: Principal, job_id: str) -> Job:
        """Resume a suspended job."""
        return await self._pause(who, job_id, Capability.RESUME, RESUMABLE, Phase.STARTING)

    async def _pause(self, who: Principal, job_id: str, cap: Capability, allowed: set[Phase], then: Phase) -> Job:
        await self.flush_completions()
        row = await self._row(who, job_id)
        adapter = self.adapter(row["backend"])
        adapter.require(cap)
        phase = Phase(row["phase"])
        if phase not in allowed or row["submit_state"] != "submitted":
            raise Conflict(f"cannot {cap.value} job {job_id} while it is {phase.value}"
                           + ("" if row["submit_state"] == "submitted" else " and not yet on the backend"))
        if cap == Capability.SUSPEND:
            await adapter.suspend(handle_of(row))
        else:
            await adapter.resume(handle_of(row))
        status = JobStatus.model_validate(row["status"]).model_copy(update={"phase": then,
                                                                            "message": f"{cap.value} requested"})
        await self.store.apply_status(job_id, status_json(status), "gateway")
        return to_job(await self._row(who, job_id))

    async def delete(self, who: Principal, job_id: str) -> None:
        """Remove the job from the backend and mark it deleted (the record stays)."""
        await self.flush_completions()
        row = await self._row(who, job_id)
        if row["deleted_at"] is not None:
            return
        adapter = self.adapter(row["backend"])
        if row["submit_state"] == "pending":
            await self.store.set_fields(job_id, cancel_requested=True)
            await self.resolve_pending(job_id)
            row = await self._row(who, job_id)
        if row["backend_job_id"]:
            await adapter.delete(handle_of(row))
        if not row["terminal"]:
            await self.store.apply_status(job_id, status_json(JobStatus(
                phase=Phase.CANCELLED, terminal=True, message="deleted", observed_at=datetime.now(UTC))), "gateway")
        await self.store.set_fields(job_id, deleted_at=time.time())

    async def backends(self) -> list[dict[str, Any]]:
        """GET /v1/backends."""
        out = []
        for b in self.config.backends:
            a = self.adapters[b.name]
            health = a.health()
            circuit = health.get("circuit", {}).get("state", "closed")
            out.append({"name": b.name, "kind": b.kind, "url": b.url, "simulated": b.simulate,
                        "capabilities": a.capabilities(), "healthy": circuit == "closed", "circuit": circuit,
                        **({"sync": health["sync"]} if "sync" in health else {})})
        return out
