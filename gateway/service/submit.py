"""The submit path, as one state machine.

    stored (submit_state=pending, QUEUED, no vendor id)
      -> sent to the vendor (Adapter.submit: one create; after an ambiguous answer a lookup by the
         deterministic vendor name, and a new create only when the job is certainly absent)
      -> confirmed  (submit_state=submitted, vendor id and first status stored)
       | rejected   (submit_state=rejected, FAILED: the vendor said no)
       | unknown    (still pending: settled later by `settle`, here or in any replica, and at start-up)
      -> settled: adopted if the vendor has it, created if it certainly does not, or
         cancelled when a cancel arrived before the vendor had it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from gateway.core.adapter import Adapter, Handle
from gateway.core.config import Config
from gateway.core.crashpoints import crash_point
from gateway.core.errors import (
    AmbiguousCreate,
    BackendError,
    BadRequest,
    Conflict,
    ValidationError,
)
from gateway.core.ids import new_job_id
from gateway.core.models import DryRun, JobSpec, JobStatus, Phase, Reason, ReportEntry, parse_spec
from gateway.core.placement import Placement
from gateway.core.translation import Translation, enforce_strict, field_loc
from gateway.service.attempts import translate_attempt
from gateway.service.placement import Placer, max_wait_of
from gateway.service.principal import Principal
from gateway.service.rows import handle_of, status_json
from gateway.store import Store

log = structlog.get_logger(__name__)
MAX_SETTLE_WAIT = 60.0  # the longest wait between two lookups of one pending job


def body_hash(raw: Any, strict: bool) -> str:
    """Fingerprint of a submission, for idempotency keys."""
    canon = json.dumps({"spec": raw, "strict": strict}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass
class Accepted:
    """A stored submission: its id, whether it was an idempotent replay of an earlier one, and its row as
    this request last wrote it (None when it must be read again)."""

    job_id: str
    replayed: bool = False
    row: dict[str, Any] | None = None


@dataclass
class Submissions:
    """Accepts jobs and drives each through the states above."""

    config: Config
    store: Store
    adapters: dict[str, Adapter[Any]]
    # backend -> its sync's wake-up, told the vendor id of a job just confirmed
    on_submitted: dict[str, Callable[[str | None], None]] = field(default_factory=dict)
    _inflight: set[str] = field(default_factory=set)  # jobs with a create or a settle under way here
    # job -> (no lookup before this monotonic time, the last wait): one job whose lookups keep failing is
    # asked about less and less often, by every path that settles it (a 5xx storm from one job's lookups
    # opened the backend's circuit breaker for every tenant).
    _backoff: dict[str, tuple[float, float]] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic  # (tests move it on)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    placer: Placer = field(init=False)

    def __post_init__(self) -> None:
        self.placer = Placer(self.config, self.store, self.adapters)

    def adapter(self, backend: str) -> Adapter[Any]:
        """The adapter of a configured backend (a 422 naming `backend` otherwise)."""
        self.config.backend(backend)
        return self.adapters[backend]

    async def translate(self, raw: Any, strict: bool, job_id: str, keep: tuple[str, ...] = ()
                        ) -> tuple[JobSpec, Translation, str, Placement | None]:
        """Validate a submission, place it when it names no single backend, and translate it for its backend:
        (spec, translation, backend, placement decision or None). A field under `keep` the backend would drop
        is a 400 naming it, strict or not (a TES task's files: a task that ran without them would lie)."""
        spec = parse_spec(raw)
        placement = None
        attempts = spec.retry is not None or spec.checkpoint is not None  # the first attempt's own name and env
        tr: Translation | None = None
        if spec.placed:  # placed candidates translate under --strict whatever the request says
            placement, tr = await self.placer.place(spec, job_id)
            backend = placement.chosen
        else:
            backend = str(spec.backend)
            adapter = self.adapter(backend)
            if not attempts:
                tr = adapter.translate(spec, job_id)
        if tr is None or attempts:
            tr = self.attempt_translation(backend, spec.model_dump(mode="json", exclude_none=True,
                                                                   exclude_unset=True), 1, job_id)
        if strict or placement is not None:
            enforce_strict(tr.report)
        lost = [e for e in tr.report if e.outcome == "dropped" and field_loc(e.field)[0] in keep]
        if lost:
            raise BadRequest(f"{lost[0].field}: backend {backend} cannot honour it: {lost[0].detail}",
                             errors=[{"loc": ["body", *field_loc(e.field)], "msg": e.detail} for e in lost])
        return spec, tr, backend, placement

    def attempt_translation(self, backend: str, spec: dict[str, Any], n: int, job_id: str) -> Translation:
        """What attempt `n` of a job is sent to `backend` as (see gateway.service.attempts)."""
        kinds = {b.name: b.kind for b in self.config.backends}
        return translate_attempt(self.adapters[backend], spec, n, job_id, kinds)

    def translation_of(self, row: dict[str, Any]) -> Translation:
        """The current attempt's translation of a stored job (what settling re-sends under the same name)."""
        spec = row["spec"]
        if int(row.get("attempt") or 1) > 1 or spec.get("retry") or spec.get("checkpoint"):
            return self.attempt_translation(row["backend"], spec, int(row.get("attempt") or 1), row["id"])
        return self.adapters[row["backend"]].translate(JobSpec.model_validate(spec), row["id"])

    async def dry_run(self, raw: Any, strict: bool) -> DryRun:
        """What a submit would send and where (for a placed job, every candidate and why), and the report;
        nothing is stored or sent."""
        _, tr, backend, placement = await self.translate(raw, strict, new_job_id())
        out = tr.dry_run(backend)
        out.placement = placement
        return out

    # -- stored -------------------------------------------------------------------------
    async def submit(self, who: Principal, raw: Any, strict: bool = False, idempotency_key: str | None = None,
                     migrated_from: str | None = None, job_id: str | None = None, source_action: str | None = None,
                     placement: Placement | None = None,
                     extra_report: list[ReportEntry] | None = None,
                     tes_task: dict[str, Any] | None = None, fingerprint: Any = None,
                     keep: tuple[str, ...] = ()) -> Accepted:
        """Store the job first (QUEUED, no vendor id), then send it; returns once it is confirmed,
        rejected (raised) or left for settling. An Idempotency-Key is bound to the request as sent:
        `fingerprint` when given (a TES task, whose spec loses fields such as its description), else `raw`."""
        idem = None
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 255 or not idempotency_key.isascii() \
                    or not idempotency_key.isprintable():
                # (Visible ASCII, as the header's draft standard has it: a non-UTF-8 byte reached PostgreSQL.)
                raise BadRequest("Idempotency-Key must be 1-255 printable ASCII characters",
                                 errors=[{"loc": ["header", "Idempotency-Key"], "msg": "1-255 printable ASCII"}])
            digest = body_hash(raw if fingerprint is None else fingerprint, strict)
            found = await self.store.keys.find(who.tenant, idempotency_key)
            if found is not None:
                return self._replay(found, digest)
            idem = (who.tenant, idempotency_key, digest)
        job_id = job_id or new_job_id()
        spec, tr, backend, placed = await self.translate(raw, strict, job_id, keep)
        placement = placement or placed  # (a move while waiting brings the decision that moved it)
        now = time.time()
        row = {
            "id": job_id, "tenant": who.tenant, "name": spec.name, "backend": backend,
            "project": tr.project, "vendor_name": tr.vendor_name, "vendor_kind": tr.kind, "backend_job_id": None,
            "spec": spec.model_dump(mode="json", exclude_none=True, exclude_unset=True),
            "report": [e.model_dump() for e in (extra_report or []) + tr.report], "labels": spec.labels or {},
            "phase": Phase.QUEUED.value, "terminal": False, "status": status_json(JobStatus(phase=Phase.QUEUED)),
            "origin": "gateway", "submit_state": "pending", "submit_error": None, "cancel_requested": False,
            "created_at": now, "updated_at": now, "deleted_at": None, "migrated_from": migrated_from,
            "migrated_to": None, "tes_task": tes_task,
            # The decision goes into the store with the job, before the vendor is called: a retry, a crash or
            # another replica never places the job again.
            "placement": placement.model_dump(mode="json") if placement is not None else None,
            "move_after": self._move_after(spec, now),
            "attempt": 1, "attempt_at": now, "recover_at": None,
            "retry": spec.retry.model_dump(mode="json") if spec.retry is not None else None,
        }
        try:
            await self.store.jobs.create(row, idem, source_action,
                                         note=f"placed on {backend}: {placement.why}" if placement else None)
        except Conflict as err:
            if idem is None or "body_hash" not in err.extra:  # e.g. a migration source claimed already
                raise
            # The same key, concurrently: the other request stored it first.
            return self._replay((str(err.extra["body_hash"]), str(err.extra["job_id"])), idem[2])
        log.info("job_accepted", job_id=job_id, backend=backend, vendor_name=tr.vendor_name,
                 placed=placement.why if placement is not None else None)
        written = await self._send(job_id, backend, tr, self.config.server.submit_wait_seconds,
                                   raise_rejection=True)
        # What this request wrote last is the answer (read-your-writes without reading the row back).
        return Accepted(job_id, row={**row, **written} if written is not None else None)

    def _move_after(self, spec: JobSpec, now: float) -> float | None:
        """When a job still waiting for GPUs may move (its max_wait; the config's for a placed job), or None."""
        wait = max_wait_of(spec, self.config)
        return None if wait is None else now + wait

    @staticmethod
    def _replay(found: tuple[str, str], digest: str) -> Accepted:
        if found[0] != digest:
            raise Conflict("this Idempotency-Key was used with a different request body",
                           extra={"job_id": found[1]})
        return Accepted(found[1], replayed=True)

    # -- sent -> confirmed | rejected | unknown -------------------------------------------
    async def send(self, job_id: str, backend: str, tr: Translation) -> None:
        """Send a stored pending submission (a next attempt) to its backend; a lost answer is settled later,
        a refusal ends the job FAILED."""
        await self._send(job_id, backend, tr, self.config.backend(backend).submit_deadline, raise_rejection=False)

    async def _send(self, job_id: str, backend: str, tr: Translation, deadline: float,
                    raise_rejection: bool) -> dict[str, Any] | None:
        """Create on the vendor and confirm; returns the columns the confirmation wrote (None when the job
        stays pending, or when it changed since and must be read again)."""
        if job_id in self._inflight:
            return None
        self._inflight.add(job_id)
        try:
            try:
                vj = await self.adapters[backend].submit(tr, deadline)
            except AmbiguousCreate as err:
                log.warning("submit_unconfirmed", job_id=job_id, reason=err.detail)
                self._later(self._settle_until_done(job_id))
                return None
            except BackendError as err:
                await self._reject(job_id, err)
                if raise_rejection:
                    err.extra["job_id"] = job_id
                    raise
                return None
            crash_point("create-sent")  # (tests: the vendor has it, the store does not know yet)
            return await self._confirm(job_id, backend, vj.handle, vj.status)
        finally:
            self._inflight.discard(job_id)

    async def _confirm(self, job_id: str, backend: str, handle: Handle,
                       status: JobStatus) -> dict[str, Any] | None:
        """Store the vendor's id and the status the create (or the lookup) answered."""
        cols = {"backend_job_id": handle.backend_job_id, "vendor_kind": handle.vendor_kind,
                "submit_state": "submitted"}
        cancel_requested, written = await self.store.jobs.confirm(job_id, status_json(status), cols)
        # A new live job: poll soon rather than at the quiet interval. Woken once the job is stored
        # (woken before, the cycle's first slice ran ahead of this write and the response). A delta that read
        # the job's changes before this row was confirmed could not place them: told its id, the sync reads it.
        self.nudge(backend, handle.backend_job_id)
        if cancel_requested and not status.terminal:  # the cancel came before the vendor had it
            confirmed = await self.store.jobs.get(job_id)
            if confirmed is not None:
                await self.cancel_on_vendor(confirmed)
            return None
        return written

    async def _reject(self, job_id: str, err: BackendError) -> None:
        status = JobStatus(phase=Phase.FAILED, terminal=True, message=f"rejected by the backend: {err.detail}",
                           observed_at=datetime.now(UTC))
        await self.store.jobs.apply_status(job_id, status_json(status), "gateway", submit_state="rejected",
                                           submit_error=err.detail)
        log.warning("submit_rejected", job_id=job_id, error=err.detail)

    # -- unknown -> settled -------------------------------------------------------------
    async def settle(self, job_id: str) -> bool:
        """Settle a submission whose outcome is unknown: adopt the vendor job if it exists, create it
        if it certainly does not. True once settled."""
        if job_id in self._inflight:
            return False
        hold = self._backoff.get(job_id)
        if hold is not None and self.clock() < hold[0]:
            return False
        row = await self.store.jobs.get(job_id)
        if row is None or row["submit_state"] != "pending":
            self._backoff.pop(job_id, None)
            return True
        adapter = self.adapters.get(row["backend"])
        if adapter is None:
            return False
        self._inflight.add(job_id)
        try:
            try:
                found = await adapter.find_by_name(row["vendor_name"], row["project"], row["vendor_kind"])
            except (BackendError, ValidationError) as err:
                wait = min(MAX_SETTLE_WAIT, max(1.0, 2 * (hold[1] if hold else 0.0)))
                self._backoff[job_id] = (self.clock() + wait, wait)
                if hold is None or wait >= MAX_SETTLE_WAIT > hold[1]:  # said when it starts and when it tops out
                    log.warning("pending_lookup_failed", job_id=job_id, error=err.detail, next_in=wait)
                return False
            self._backoff.pop(job_id, None)
            if found is not None:
                log.info("pending_adopted", job_id=job_id, vendor_id=found.handle.backend_job_id)
                await self._confirm(job_id, row["backend"], found.handle, found.status)
                return True
            if row["cancel_requested"]:
                await self.store.jobs.apply_status(job_id, status_json(JobStatus(
                    phase=Phase.CANCELLED, terminal=True, message="cancelled before it reached the backend",
                    observed_at=datetime.now(UTC), reason=Reason.CANCELLED,
                    reason_message="cancelled before it reached the backend")), "gateway", submit_state="cancelled")
                return True
            tr = self.translation_of(row)
        finally:
            self._inflight.discard(job_id)
        await self._send(job_id, row["backend"], tr, self.config.backend(row["backend"]).submit_deadline,
                         raise_rejection=False)
        fresh = await self.store.jobs.get(job_id)
        return fresh is None or fresh["submit_state"] != "pending"

    async def _settle_until_done(self, job_id: str, delay: float = 1.0) -> None:
        while True:
            await asyncio.sleep(delay)
            try:
                if await self.settle(job_id):
                    return
            except Exception as err:
                log.warning("pending_resolve_failed", job_id=job_id, error=str(err))
            delay = min(delay * 2, 30.0)

    async def recover(self) -> int:
        """At start-up: settle every submission a previous process left in flight."""
        rows = await self.store.jobs.pending()
        for row in rows:
            if row["backend"] in self.adapters:
                self._later(self._settle_until_done(row["id"], delay=0.0))
        if rows:
            log.info("recovering_pending_submissions", count=len(rows))
        return len(rows)

    def settle_later(self, job_id: str) -> None:
        """Settle a pending job in the background (after a cancel arrived for it)."""
        self._later(self.settle(job_id))

    def nudge(self, backend: str, confirmed: str | None = None) -> None:
        """Wake the backend's sync: the gateway just changed something there, so news is likely soon (with
        `confirmed`, the vendor id of a job just confirmed)."""
        wake = self.on_submitted.get(backend)
        if wake is not None:
            wake(confirmed)

    async def cancel_on_vendor(self, row: dict[str, Any]) -> None:
        """Ask the vendor to stop a confirmed job, and show CANCELLING until the sync sees it end."""
        await self.adapters[row["backend"]].cancel(handle_of(row))
        status = JobStatus.model_validate(row["status"])
        if status.phase not in (Phase.CANCELLING, Phase.CANCELLED):
            status = status.model_copy(update={"phase": Phase.CANCELLING, "terminal": False,
                                               "message": "cancel requested"})
            await self.store.jobs.apply_status(row["id"], status_json(status), "gateway")

    def _later(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop settling in the background (pending jobs stay pending: the next start settles them)."""
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
