"""The idle watch: running jobs that hold GPUs and do not use them.

Run from a backend's sync loop (so one replica watches each backend). Every `idle.check_interval`
it reads the GPU utilization of the backend's running GPU jobs (those whose metrics the backend serves)
over the last `idle.window_seconds`; a job whose every sample in a full window is under
`idle.threshold_percent` is marked idle with one `idle` event, and a marked job whose newest sample is
back over the threshold gets one `active` event.
The samples also feed the job's mean GPU utilization (status.gpu_utilization).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.core.adapter import Adapter, Capability
from gateway.core.config import IdleConfig
from gateway.core.errors import GatewayError
from gateway.core.slices import Slices
from gateway.core.telemetry import job_gpus
from gateway.service.rows import handle_of, kind_of
from gateway.store import Store

log = structlog.get_logger(__name__)

CONCURRENCY = 8
MAX_JOBS_PER_CHECK = 200  # the least recently checked first: a check's vendor calls stay bounded


@dataclass
class IdleWatch:
    """The idle watch of one backend."""

    adapter: Adapter[Any]
    store: Store
    config: IdleConfig
    next_at: float = 0.0

    async def maybe_check(self) -> None:
        """Check when due (called after every sync cycle)."""
        if not self.config.enabled or Capability.METRICS in self.adapter.unsupported:
            return
        if time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + self.config.check_interval
        await self.check()

    async def check(self) -> int:
        """One look at every running GPU job of the backend; returns the idle/active events written."""
        everything = await self.store.jobs.running(self.adapter.name)
        rows: list[dict[str, Any]] = []
        slices = Slices()  # 10,000 running jobs took 60 ms to sift in one go, with every request waiting
        while everything:
            r = everything.pop()
            if job_gpus(r["spec"] or {}, r["status"]) > 0 and \
                    Capability.METRICS not in self.adapter.unsupported_for(kind_of(r)):
                rows.append(r)
            await slices.turn()
        if not rows:
            return 0
        rows.sort(key=lambda r: float((r["status"] or {}).get("activity_checked_at") or 0))
        del rows[MAX_JOBS_PER_CHECK:]
        started = await self.store.events.phases_of([r["id"] for r in rows])
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(row: dict[str, Any]) -> int:
            since = max((at for at, phase in started.get(row["id"], []) if phase == "RUNNING"), default=None)
            if since is None:
                return 0
            async with gate:
                return await self.look(row, since)

        return sum(await asyncio.gather(*(one(r) for r in rows)))

    async def look(self, row: dict[str, Any], running_since: float) -> int:
        """Read one job's recent GPU utilization and record what it says."""
        now = time.time()
        window = self.config.window_seconds
        status = row["status"] or {}
        checked = float(status.get("activity_checked_at") or running_since)
        frm = max(running_since, min(now - window, checked))
        try:
            got = await self.adapter.metrics(handle_of(row), ["gpu_utilization"], frm, now)
        except GatewayError as err:
            log.debug("idle_check_failed", job_id=row["id"], error=err.detail)
            return 0
        points = next((s.points for s in got.series if s.name == "gpu_utilization"), [])
        fresh = [v for t, v in points if t > checked]
        values: dict[str, Any] = {"activity_checked_at": max([checked, *(t for t, _ in points)])}
        if fresh:
            n = int(status.get("gpu_utilization_points") or 0)
            mean = float(status.get("gpu_utilization") or 0.0)
            values["gpu_utilization"] = round((mean * n + sum(fresh)) / (n + len(fresh)), 2)
            values["gpu_utilization_points"] = n + len(fresh)
        recent = [v for t, v in points if t >= now - window]
        threshold = self.config.threshold_percent
        idle_now = now - running_since >= window and bool(recent) and max(recent) < threshold
        mark: tuple[str, str] | None = None
        if idle_now and not status.get("idle"):
            values.update(idle=True, idle_since=now)
            mark = ("idle", f"GPU utilization under {threshold:g}% for {window:g}s (at most {max(recent):.1f}%)")
        elif status.get("idle") and points and points[-1][1] >= threshold:
            values.update(idle=False, idle_since=None)
            mark = ("active", f"GPU utilization back to {points[-1][1]:.1f}%")
        await self.store.jobs.set_activity(row["id"], values, mark)
        if mark is not None:
            log.info(f"job_{mark[0]}", job_id=row["id"], backend=self.adapter.name, detail=mark[1])
        return 1 if mark else 0
