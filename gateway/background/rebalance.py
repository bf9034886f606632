"""Rebalance while waiting: a job QUEUED on its vendor for want of GPUs (reason no-capacity or
quota-exceeded) for longer than its `placement.max_wait` moves to another candidate that has the GPUs free
now, at most `placement.max_moves` times, never once it has started.

A move is a migration with `source_action: cancel` under an Idempotency-Key made of the job and the move's
number: the target is created and the source claimed in one transaction, the source's cancel is owed until
done (gateway.service.migrate), so a crash or a second replica in the middle never makes a second target.
One replica runs it at a time (leased like the sync).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from gateway.core.config import Config
from gateway.core.errors import GatewayError
from gateway.core.models import JobSpec, PlacementSpec
from gateway.core.placement import Placement
from gateway.service.jobs import JobService
from gateway.service.migrate import migrate
from gateway.service.placement import max_wait_of
from gateway.service.principal import Principal

log = structlog.get_logger(__name__)

MOVABLE = ("no-capacity", "quota-exceeded")
INTERVAL = 2.0


def due(row: dict[str, Any], spec: JobSpec, config: Config, now: float) -> tuple[float, int] | None:
    """(seconds waited, moves so far) when the job is due to move, else None."""
    max_wait = max_wait_of(spec, config)
    status = row["status"] or {}
    if max_wait is None or status.get("reason") not in MOVABLE:
        return None
    since = status.get("pending_since")
    started = datetime.fromisoformat(str(since).replace("Z", "+00:00")).timestamp() if since else row["created_at"]
    waited = now - started
    moves = int((row.get("placement") or {}).get("moves") or 0)
    most = spec.placement.max_moves if spec.placement else PlacementSpec().max_moves
    if waited < max_wait or moves >= most:
        return None
    return waited, moves


async def maybe_move(service: JobService, config: Config, row: dict[str, Any], now: float) -> str | None:
    """Move one waiting job if it is due and a candidate has the GPUs free now; the target's id, or None."""
    spec = JobSpec.model_validate(row["spec"])
    got = due(row, spec, config, now)
    if got is None:
        return None
    waited, moves = got
    placer = service.submissions.placer
    others = [n for n in placer.candidates(spec) if n != row["backend"]]
    if not others:
        return None
    need = (spec.resources.gpus or 0.0) * spec.resources.nodes
    try:
        decision, _ = await placer.place(spec.model_copy(update={"backend": others,
                                                                 "placement": spec.placement}), row["id"])
    except GatewayError:  # no other candidate can run it
        return None
    chosen = next(c for c in decision.candidates if c.backend == decision.chosen)
    if chosen.free_gpus is None or chosen.free_gpus < need:
        return None  # nowhere has the GPUs free now: it stays where it waits
    reason = (row["status"] or {}).get("reason")
    why = f"moved from {row['backend']} after waiting {waited:.0f} s ({reason}): {decision.why}"
    record = Placement(policy=decision.policy, candidates=decision.candidates, chosen=decision.chosen, why=why,
                       decided_at=datetime.now(UTC), moves=moves + 1)
    who = Principal(tenant=row["tenant"] or "", role="admin")
    moved = await migrate(service, who, row["id"], {"backend": decision.chosen, "source_action": "cancel"},
                          dry_run=False, idempotency_key=f"tjg-move:{row['id']}:{moves + 1}", placement=record)
    target = moved.job.id if moved.job is not None else None
    log.info("job_moved", job_id=row["id"], target=target, backend=decision.chosen, waited=round(waited, 1),
             reason=reason, moves=moves + 1)
    return target


def rebalance_step(service: JobService, config: Config) -> Callable[[], Awaitable[float]]:
    """One pass over the waiting jobs; returns the seconds until the next."""
    async def step() -> float:
        now = time.time()
        for row in await service.store.jobs.waiting(now):
            if row["phase"] != "QUEUED" or row["migrated_to"] or row["deleted_at"] is not None:
                # Started, ended, moved or deleted: it never moves now.
                await service.store.jobs.set_fields(row["id"], move_after=None)
                continue
            if row["submit_state"] != "submitted":
                continue
            try:
                await maybe_move(service, config, row, now)
            except Exception as err:  # one job's trouble must not stop the others' moves
                log.warning("rebalance_failed", job_id=row["id"], error=str(err))
        return INTERVAL
    return step
