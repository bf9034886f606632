"""Settling submissions that a replica left pending when it died."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from gateway.core.config import Config
from gateway.service.jobs import JobService
from gateway.service.migrate import finish_source_action

log = structlog.get_logger(__name__)


def reconcile_step(service: JobService, config: Config) -> Callable[[], Awaitable[float]]:
    """Settle submissions left pending by a replica that died (older than replica.reconcile_after)."""
    async def step() -> float:
        for row in await service.store.jobs.pending(older_than=config.replica.reconcile_after):
            try:
                await service.resolve_pending(row["id"])
            except Exception as err:
                log.warning("reconcile_failed", job_id=row["id"], error=str(err))
        # A migration whose source action a dead process (or a failed vendor call) left undone.
        for row in await service.store.jobs.owing_source_actions(older_than=config.replica.reconcile_after):
            try:
                await finish_source_action(service, row["id"])
            except Exception as err:
                log.warning("reconcile_failed", job_id=row["id"], error=str(err))
        return 5.0
    return step
