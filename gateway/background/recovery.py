"""Managed recovery's loop: makes the next attempt of a job whose last one failed within its retry rules,
moves a job its vendor keeps requeued after a preemption when failover finds room elsewhere, and stops the
vendor jobs of attempts moved away. One replica runs it at a time (leased like the sync).

An attempt's life, as the submit path's: the status write that sees attempt N fail stores it ended and the
job `recovering` (one transaction: gateway.store.jobs); here attempt N+1 is placed (with failover) and stored
as a pending submission under its own deterministic vendor name (a compare-and-set: once, and never after a
cancel); then it is sent, and a lost answer is settled by that name like any create.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from gateway.core.adapter import Handle
from gateway.core.crashpoints import crash_point
from gateway.core.errors import BackendError, GatewayError, NotFound
from gateway.core.models import JobSpec, Phase, Reason
from gateway.core.placement import Placement
from gateway.service.jobs import JobService

log = structlog.get_logger(__name__)

INTERVAL = 1.0
LOOK_AGAIN = 5.0  # a requeued job with nowhere better to go is looked at again after this


def failover_candidates(service: JobService, spec: JobSpec) -> list[str]:
    """Where a failover attempt may go: the job's candidates (`auto`: every configured backend); a job that
    names one backend may go to any configured one (failover says so)."""
    placer = service.submissions.placer
    return placer.candidates(spec) if spec.placed else [b.name for b in service.config.backends]


async def place_attempt(service: JobService, spec: JobSpec, job_id: str, n: int) -> tuple[str, Placement]:
    """Place attempt `n` of a failover job among its candidates (a GatewayError when none can run it)."""
    placer = service.submissions.placer
    decision, _ = await placer.place(spec.model_copy(update={"backend": failover_candidates(service, spec)}),
                                     job_id)
    decision.why = f"attempt {n}: {decision.why}"
    return decision.chosen, decision


async def next_attempt(service: JobService, row: dict[str, Any]) -> bool:
    """Make the next attempt of a recovering job (or end it CANCELLED if a cancel came). True when this
    call stored the attempt."""
    store, subs = service.store, service.submissions
    job_id, n = row["id"], int(row["attempt"])
    crash_point("attempt-recovering")  # (tests: the attempt has ended, nothing of the next exists)
    if row["cancel_requested"] or row["deleted_at"] is not None:
        await service.cancel_between_attempts(job_id)
        return False
    spec = JobSpec.model_validate(row["spec"])
    backend, placement = row["backend"], None
    if spec.retry is not None and spec.retry.failover:
        try:
            backend, placement = await place_attempt(service, spec, job_id, n)
        except GatewayError as err:
            log.warning("recovery_unplaceable", job_id=job_id, attempt=n, error=err.detail)
            await store.jobs.set_fields(job_id, recover_at=time.time() + LOOK_AGAIN)
            return False
    if backend not in service.adapters:
        log.warning("recovery_backend_gone", job_id=job_id, backend=backend)
        await store.jobs.set_fields(job_id, recover_at=time.time() + LOOK_AGAIN)
        return False
    tr = subs.attempt_translation(backend, row["spec"], n, job_id)
    dropped = [e.field for e in tr.report if e.outcome == "dropped"]
    note = f"attempt {n} on {backend} as {tr.vendor_name}" + (f" ({placement.why})" if placement else "") + \
        (f"; dropped there: {', '.join(dropped)}" if dropped else "")
    cols: dict[str, Any] = {"backend": backend, "vendor_name": tr.vendor_name, "vendor_kind": tr.kind,
                            "project": tr.project, "report": [e.model_dump() for e in tr.report]}
    if placement is not None:
        cols["placement"] = placement.model_dump(mode="json")
    if not await store.jobs.begin_attempt(job_id, cols, note):
        fresh = await store.jobs.get(job_id)  # another replica did it, or a cancel came first
        if fresh is not None and fresh["submit_state"] == "recovering" and fresh["cancel_requested"]:
            await service.cancel_between_attempts(job_id)
        return False
    log.info("attempt_started", job_id=job_id, attempt=n, backend=backend, vendor_name=tr.vendor_name)
    crash_point("attempt-stored")  # (tests: stored as pending, not yet sent)
    await subs.send(job_id, backend, tr)
    return True


async def move_requeued(service: JobService, row: dict[str, Any]) -> bool:
    """A job its vendor requeued after a preemption, with failover: end this attempt and make the next
    elsewhere if another candidate has the GPUs free now; else look again later. True when it moved."""
    store = service.store
    status = row["status"] or {}
    spec = JobSpec.model_validate(row["spec"])
    if (row["phase"] != Phase.QUEUED.value or status.get("reason") != Reason.PREEMPTED.value
            or row["submit_state"] != "submitted" or row["cancel_requested"] or spec.retry is None):
        await store.jobs.set_fields(row["id"], recover_at=None)
        return False
    n = int(row["attempt"])
    if n >= spec.retry.max_attempts or (spec.retry.within is not None
                                        and time.time() - row["created_at"] >= float(spec.retry.within)):
        await store.jobs.set_fields(row["id"], recover_at=None)  # its limits are spent: it waits where it is
        return False
    need = (spec.resources.gpus or 0.0) * spec.resources.nodes
    try:
        chosen, placement = await place_attempt(service, spec, row["id"], n + 1)
    except GatewayError:
        chosen, placement = row["backend"], None
    offer = next((c for c in placement.candidates if c.backend == chosen), None) if placement else None
    if chosen == row["backend"] or offer is None or (need > 0 and (offer.free_gpus or 0.0) < need):
        await store.jobs.set_fields(row["id"], recover_at=time.time() + LOOK_AGAIN)
        return False
    words = (f"attempt {n} was preempted on {row['backend']} and waits there; attempt {n + 1} follows "
             f"({chosen} has the GPUs free)")
    if not await store.jobs.end_attempt(row["id"], int(row["version"]), words):
        return False
    log.info("attempt_moved", job_id=row["id"], attempt=n, backend=row["backend"], to=chosen)
    fresh = await store.jobs.get(row["id"])
    if fresh is not None and fresh["submit_state"] == "recovering":
        await next_attempt(service, fresh)
    await stop_owed(service)
    return True


async def stop_owed(service: JobService) -> int:
    """Cancel the vendor jobs of attempts that were moved away while still queued there; returns how many."""
    done = 0
    for a in await service.store.attempts.stops_owed():
        adapter = service.adapters.get(a["backend"])
        if adapter is None or not a["backend_job_id"]:
            await service.store.attempts.stopped(a["job_id"], a["n"])
            continue
        try:
            await adapter.cancel(Handle(a["backend_job_id"], a["vendor_name"], a["vendor_kind"]))
        except NotFound:
            pass
        except BackendError as err:  # kept owed: tried again next pass
            log.warning("attempt_stop_failed", job_id=a["job_id"], attempt=a["n"], error=err.detail)
            continue
        await service.store.attempts.stopped(a["job_id"], a["n"])
        log.info("attempt_stopped", job_id=a["job_id"], attempt=a["n"], backend=a["backend"])
        done += 1
    return done


def recovery_step(service: JobService) -> Callable[[], Awaitable[float]]:
    """One pass: every job due (a next attempt owed, or a requeued preemption to move), then owed stops."""
    async def step() -> float:
        for row in await service.store.jobs.recovery_due(time.time()):
            try:
                if row["submit_state"] == "recovering":
                    await next_attempt(service, row)
                else:
                    await move_requeued(service, row)
            except Exception as err:  # one job's trouble must not stop the others' recovery
                log.warning("recovery_failed", job_id=row["id"], error=str(err))
        try:
            await stop_owed(service)
        except Exception as err:
            log.warning("recovery_failed", error=str(err))
        return INTERVAL
    return step
