"""Settling submissions that a replica left pending when it died."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from gateway.core.config import Config
from gateway.service.jobs import JobService

log = structlog.get_logger(__name__)


def reconcile_step(service: JobService, config: Config) -> Callable[[], Awaitable[float]]:
    """Settle submissions left pending by a replica that died (older than replica.reconcile_after)."""
    async def step() -> float:
        for row in await service.store.jobs.pending(older_than=config.replica.reconcile_after):
            try:
                await service.resolve_pending(row["id"])
            except Exception as err:
                log.warning("reconcile_failed", job_id=row["id"], error=str(err))
        return 5.0
    return step
