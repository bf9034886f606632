"""Job operations behind the HTTP APIs: submit (see gateway.service.submit), read, act."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.core.adapter import Adapter, Capability
from gateway.core.config import Config
from gateway.core.errors import Conflict, NotFound
from gateway.core.models import DryRun, Job, JobStatus, Phase, Reason
from gateway.core.telemetry import DEFAULT_METRICS, JobMetrics
from gateway.service.attempts import attempts_of
from gateway.service.principal import Principal
from gateway.service.rows import dt, handle_of, kind_of, status_json, to_job
from gateway.service.submit import Submissions
from gateway.service.usage import usage
from gateway.service.why import capacity_of
from gateway.service.why import why as why_of
from gateway.store import ListFilters, Store, decode_token, encode_token
from gateway.store.visibility import sees
from mappings import prices

JSON_CACHE_SIZE = 10_000
SUSPENDABLE = {Phase.QUEUED, Phase.STARTING, Phase.RUNNING}
RESUMABLE = {Phase.SUSPENDED, Phase.SUSPENDING}

__all__ = ["RESUMABLE", "SUSPENDABLE", "JobService", "Principal", "SubmitResult", "to_job"]


@dataclass
class SubmitResult:
    """A submitted (or replayed) job."""

    job: Job
    replayed: bool = False


@dataclass
class JobService:
    """The gateway's job operations."""

    config: Config
    store: Store
    adapters: dict[str, Adapter[Any]]
    submissions: Submissions = field(init=False)
    # job id -> (row version, who may see it, GET's answer): see get_json
    _json: dict[str, tuple[int, dict[str, Any], bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.submissions = Submissions(self.config, self.store, self.adapters)
        self.store.jobs.on_write.append(self._forget)

    def adapter(self, backend: str) -> Adapter[Any]:
        """The adapter of a configured backend (a 422 naming `backend` otherwise)."""
        return self.submissions.adapter(backend)

    # -- submit -------------------------------------------------------------------------
    async def dry_run(self, raw: Any, strict: bool) -> DryRun:
        """What a submit would send, and the report; nothing is stored or sent."""
        return await self.submissions.dry_run(raw, strict)

    async def submit(self, who: Principal, raw: Any, strict: bool = False, idempotency_key: str | None = None,
                     **kw: Any) -> SubmitResult:
        """Accept a job (see gateway.service.submit) and return it as it stands."""
        accepted = await self.submissions.submit(who, raw, strict, idempotency_key, **kw)
        job = to_job(accepted.row) if accepted.row is not None else await self.get_any(accepted.job_id)
        return SubmitResult(job, accepted.replayed)

    async def resolve_pending(self, job_id: str) -> bool:
        """Settle one submission whose outcome is unknown; True once settled."""
        return await self.submissions.settle(job_id)

    async def recover(self) -> int:
        """At start-up: settle every submission a previous process left in flight."""
        return await self.submissions.recover()

    async def close(self) -> None:
        """Stop background work."""
        await self.submissions.close()

    # -- reads --------------------------------------------------------------------------
    async def get_any(self, job_id: str) -> Job:
        """A job by id regardless of tenant (internal)."""
        row = await self.store.jobs.get(job_id)
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return to_job(row)

    async def row(self, who: Principal, job_id: str) -> dict[str, Any]:
        row = await self.store.jobs.get(job_id)
        if row is None or not sees(who, row):
            raise NotFound(f"job {job_id} not found")
        return row

    async def get(self, who: Principal, job_id: str) -> Job:
        """One job the caller may see (another tenant's job is a 404), with its attempts."""
        return await self._full(await self.row(who, job_id))

    async def _full(self, row: dict[str, Any]) -> Job:
        """A row as the API's Job with its attempts (read only for a job with retry rules or attempts)."""
        job = to_job(row)
        if row.get("retry") or int(row.get("attempt") or 1) > 1:
            job.attempts = await attempts_of(self.store, row)
        return job

    async def get_json(self, who: Principal, job_id: str) -> bytes:
        """get() as response bytes, kept per job until its row is next written: the one cache. On SQLite
        this process is the file's only writer (gateway.store.ownership) and each of its writes drops the
        answers of the rows it touched before anything else runs; on PostgreSQL, where other replicas
        write too, a kept answer is served only while the row is still at the version it was made from
        (one primary-key lookup). Either way every GET sees every write made before it."""
        hit = self._json.get(job_id)
        if hit is not None and not self.store.is_sqlite and await self.store.jobs.version(job_id) != hit[0]:
            hit = None
        if hit is not None and sees(who, hit[1]):
            return hit[2]
        row = await self.row(who, job_id)
        body = (await self._full(row)).model_dump_json().encode()
        if len(self._json) >= JSON_CACHE_SIZE:
            self._json.pop(next(iter(self._json)))
        self._json[job_id] = (int(row["version"]), {k: row[k] for k in ("tenant", "origin", "project")}, body)
        return body

    def _forget(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            self._json.pop(job_id, None)

    async def list_jobs(self, who: Principal, f: ListFilters, limit: int, page_token: str | None) -> tuple[list[Job],
                                                                                                 str | None]:
        """A page of jobs, newest first."""
        rows, token = await self.list_rows(who, f, limit, page_token)
        return [to_job(r) for r in rows], token

    async def list_rows(self, who: Principal, f: ListFilters, limit: int,
                        page_token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the store rows the caller may see, newest first, and the next page's token."""
        f.viewer = who
        after = decode_token(page_token) if page_token else None
        rows, cut = await self.store.jobs.page(f, limit + 1, after, self.config.server.max_page_bytes)
        more = cut or len(rows) > limit
        rows = rows[:limit]
        return rows, encode_token(rows[-1]["id"]) if more and rows else None

    async def events(self, who: Principal, job_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """A job's phase transitions, oldest first."""
        await self.row(who, job_id)
        return [{"kind": t["kind"], "seq": t["seq"], "from_phase": t["from_phase"], "to_phase": t["to_phase"],
                 "vendor_phase": t["vendor_phase"], "message": t["message"], "reason": t.get("reason"),
                 "source": t["source"], "at": dt(t["at"])} for t in await self.store.events.for_job(job_id, after_seq)]

    async def vendor_events(self, who: Principal, job_id: str) -> list[dict[str, Any]]:
        """The vendor's own events for a job, marked by source (empty when it has none or cannot say)."""
        row = await self.row(who, job_id)
        adapter = self.adapter(row["backend"])
        if not row["backend_job_id"] or Capability.EVENTS in adapter.unsupported_for(kind_of(row)):
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
        row = await self.row(who, job_id)
        adapter = self.adapter(row["backend"])
        adapter.require(Capability.LOGS, kind_of(row))
        if not row["backend_job_id"]:
            raise Conflict(f"job {job_id} is not on the backend yet; no logs")
        chunk = await adapter.logs(handle_of(row), task, tail)
        return {"job_id": job_id, "task": chunk.task, "content": chunk.content, "full_size": chunk.full_size}

    async def metrics(self, who: Principal, job_id: str, names: list[str] | None,
                      since: float | None) -> dict[str, Any]:
        """The job's resource metrics from its backend, with a note for every metric asked for."""
        row = await self.row(who, job_id)
        adapter = self.adapter(row["backend"])
        adapter.require(Capability.METRICS, kind_of(row))
        names = names or list(DEFAULT_METRICS)
        if not row["backend_job_id"]:
            got = JobMetrics()
            for n in names:
                got.add(n, "unavailable", "the job is not on the backend yet")
        else:
            start = max(since or 0.0, float(row["created_at"]))
            got = await adapter.metrics(handle_of(row), names, start, time.time())
        return {"job_id": job_id, "backend": row["backend"],
                "series": [{"name": s.name, "unit": s.unit, "points": [[dt(t), v] for t, v in s.points]}
                           for s in got.series],
                "report": [{"name": n.name, "outcome": n.outcome, "detail": n.detail} for n in got.report]}

    async def usage(self, who: Principal, group_by: str, since: float | None, until: float | None) -> dict[str, Any]:
        """GPU-hours and utilization grouped (see gateway.service.usage)."""
        return await usage(self.store, self.adapters, prices()[0], who, group_by, since, until)

    # -- actions ------------------------------------------------------------------------
    async def cancel(self, who: Principal, job_id: str) -> Job:
        """Stop a job for good; the record stays."""
        row = await self.row(who, job_id)
        adapter = self.adapter(row["backend"])
        adapter.require(Capability.CANCEL, kind_of(row))
        if row["terminal"]:
            raise Conflict(f"job {job_id} is already {row['phase']}")
        await self.store.jobs.set_fields(job_id, cancel_requested=True)
        if row["submit_state"] == "recovering":
            await self.cancel_between_attempts(job_id)
            row = await self.row(who, job_id)  # (its next attempt may have been stored meanwhile: below)
            if row["terminal"]:
                return to_job(row)
        if row["submit_state"] == "pending":
            self.submissions.settle_later(job_id)
            return to_job(await self.row(who, job_id))
        await self.submissions.cancel_on_vendor(row)
        self.submissions.nudge(row["backend"])
        return to_job(await self.row(who, job_id))

    async def cancel_between_attempts(self, job_id: str) -> bool:
        """End a job that waits for its next attempt: CANCELLED, and no attempt is made after it (False when
        the next attempt was stored first: it is then cancelled as any pending submission)."""
        words = "cancelled between attempts: no further attempt is made"
        status = JobStatus(phase=Phase.CANCELLED, terminal=True, message=words, observed_at=datetime.now(UTC),
                           reason=Reason.CANCELLED, reason_message=words, retry_outcome="cancelled")
        return await self.store.jobs.cancel_recovering(job_id, status_json(status))

    async def suspend(self, who: Principal, job_id: str) -> Job:
        """Pause a job where the backend allows it."""
        return await self._pause(who, job_id, Capability.SUSPEND, SUSPENDABLE, Phase.SUSPENDING)

    async def resume(self, who: Principal, job_id: str) -> Job:
        """Resume a suspended job."""
        return await self._pause(who, job_id, Capability.RESUME, RESUMABLE, Phase.QUEUED)

    async def _pause(self, who: Principal, job_id: str, cap: Capability, allowed: set[Phase], then: Phase) -> Job:
        row = await self.row(who, job_id)
        adapter = self.adapter(row["backend"])
        adapter.require(cap, kind_of(row))
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
        await self.store.jobs.apply_status(job_id, status_json(status), "gateway")
        self.submissions.nudge(row["backend"])
        return to_job(await self.row(who, job_id))

    async def scale(self, who: Principal, job_id: str, replicas: int) -> Job:
        """Set an inference workload's replicas where the backend allows it (a 409 with the reason otherwise)."""
        row = await self.row(who, job_id)
        adapter = self.adapter(row["backend"])
        adapter.require(Capability.SCALE, kind_of(row))
        if row["terminal"] or row["submit_state"] != "submitted":
            raise Conflict(f"cannot scale job {job_id} while it is {row['phase']}"
                           + ("" if row["submit_state"] == "submitted" else " and not yet on the backend"))
        await adapter.scale(handle_of(row), replicas)
        status = JobStatus.model_validate(row["status"]).model_copy(update={
            "desired_replicas": replicas, "message": f"scale to {replicas} replica(s) requested"})
        await self.store.jobs.apply_status(job_id, status_json(status), "gateway")
        self.submissions.nudge(row["backend"])
        return to_job(await self.row(who, job_id))

    async def delete(self, who: Principal, job_id: str) -> None:
        """Remove the job from the backend and mark it deleted (the record stays)."""
        row = await self.row(who, job_id)
        if row["deleted_at"] is not None:
            return
        adapter = self.adapter(row["backend"])
        # Marked first: from here no migration may claim it (its create transaction checks), so a migrate
        # racing this delete either made its target before (linked, as any target) or makes none.
        if not await self.store.jobs.mark_deleting(job_id):
            return  # another request deletes it
        try:
            await self._remove(who, job_id, adapter)
        except BaseException:
            await self.store.jobs.set_fields(job_id, deleted_at=None)  # not deleted after all
            raise

    async def _remove(self, who: Principal, job_id: str, adapter: Adapter[Any]) -> None:
        row = await self.row(who, job_id)
        if row["submit_state"] == "recovering":
            await self.store.jobs.set_fields(job_id, cancel_requested=True)
            await self.cancel_between_attempts(job_id)
            row = await self.row(who, job_id)
        if row["submit_state"] == "pending":
            await self.store.jobs.set_fields(job_id, cancel_requested=True)
            await self.resolve_pending(job_id)
            row = await self.row(who, job_id)
        if row["backend_job_id"]:
            await adapter.delete(handle_of(row))
        if not row["terminal"]:
            await self.store.jobs.apply_status(job_id, status_json(JobStatus(
                phase=Phase.CANCELLED, terminal=True, message="deleted", observed_at=datetime.now(UTC),
                reason=Reason.CANCELLED, reason_message="deleted")), "gateway")

    async def why(self, who: Principal, job_id: str) -> dict[str, Any]:
        """Why the job waits or ended, the capacity last seen on every backend, and what would help."""
        row = await self.row(who, job_id)
        return await why_of(self.store, [b.name for b in self.config.backends], row, who)

    async def capacity(self, backend: str) -> dict[str, Any]:
        """The capacity last read from a configured backend (a 404 for an unknown one)."""
        if backend not in self.adapters:
            raise NotFound(f"no backend named {backend!r}; configured: {', '.join(sorted(self.adapters))}")
        self.adapters[backend].require(Capability.CAPACITY)
        return (await capacity_of(self.store, backend)).model_dump(mode="json")

    async def backends(self) -> list[dict[str, Any]]:
        """GET /v1/backends."""
        out = []
        for b in self.config.backends:
            a = self.adapters[b.name]
            health = a.health()
            circuit = health.get("circuit", {}).get("state", "closed")
            out.append({"name": b.name, "kind": b.kind, "url": b.url, "simulated": b.simulate,
                        "capabilities": a.capabilities(), "inference_capabilities": a.capabilities("inference"),
                        "healthy": circuit == "closed", "circuit": circuit,
                        **({"sync": health["sync"]} if "sync" in health else {})})
        return out
