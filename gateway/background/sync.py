"""Status sync: one loop per backend reading the vendor's list API page by page.

A cycle costs about one request per page; a per-job GET is made only for live jobs the lists
did not show. A failed poll changes no phase: it marks the backend's jobs stale, logging once
on failure and once on recovery.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from gateway.background.idle import IdleWatch
from gateway.core.adapter import Adapter, Capability, VendorJob
from gateway.core.errors import GatewayError
from gateway.core.models import JobStatus, Phase, Reason
from gateway.core.slices import Slices
from gateway.core.transitions import digest
from gateway.service.rows import handle_of, status_json
from gateway.store import Store
from gateway.store.jobs import Update

log = structlog.get_logger(__name__)

CLOCK_SLACK_SECONDS = 300.0
WRITE_BATCH = 100  # statuses stored per write transaction
MIN_CYCLE_GAP = 1.0
BUSY = {Phase.QUEUED.value, Phase.STARTING.value, Phase.CANCELLING.value, Phase.SUSPENDING.value}


def _changed(row: dict[str, Any], new: JobStatus) -> bool:
    """Whether the vendor says anything the stored status does not (any field the vendor owns), or the
    stored one is flagged stale: their digests differ."""
    return bool(row["vendor_digest"] != digest(new))


@dataclass
class CycleStats:
    """What one sync cycle did."""

    list_requests: int = 0
    get_requests: int = 0
    updated: int = 0
    imported: int = 0
    seconds: float = 0.0


@dataclass
class BackendSync:
    """The sync loop of one backend."""

    adapter: Adapter[Any]
    store: Store
    page_size: int = 500
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _last_start: float = 0.0
    failing: bool = False
    last: CycleStats = field(default_factory=CycleStats)
    last_ok: float | None = None
    idle: IdleWatch | None = None
    cycles: int = 0  # cycles completed
    _capacity_at: float = -1e18  # when capacity was last read (monotonic)
    _capacity_broken: bool = False

    @property
    def backend(self) -> str:
        return self.adapter.name

    async def cycle(self) -> CycleStats:
        """One pass over the backend; raises the vendor error when the poll fails."""
        started = time.monotonic()
        stats = CycleStats()
        live = await self.store.jobs.live(self.backend)
        adopt = self.adapter.config.adopt_external
        if not live and not adopt:
            self.last = stats
            return stats
        known: set[str] | None = await self.store.jobs.known_vendor_ids(self.backend) if adopt else None
        # Only vendor jobs created since our oldest live job can be ours (minus slack for clock skew);
        # older vendor jobs would cost pages and no news.
        since = None if adopt else min(r["created_at"] for r in live) - CLOCK_SLACK_SECONDS
        # The live jobs no page has shown yet. Each row leaves as a page shows its job, so the rows of a big
        # backend are freed a slice at a time: dropping 10,000 at the end of a cycle held the loop ~10 ms.
        unseen = {r["backend_job_id"]: r for r in live}
        del live
        slices = Slices()
        offset, more = 0, True
        while more and (unseen or adopt):
            page, more = await self.adapter.list_page(offset, self.page_size, active_only=not adopt, since=since)
            stats.list_requests += 1
            read = len(page)
            offset += read
            batch: list[Update] = []
            page.reverse()
            while page:
                # Each record leaves the page as it is read, so it is freed within this slice: freeing a
                # 500-record page in one go held the event loop for a millisecond.
                vj = page.pop()
                vid = vj.handle.backend_job_id
                row = unseen.pop(vid, None)
                if row is not None:
                    if _changed(row, vj.status):
                        # Written only if the row is still as read before this page was asked for.
                        batch.append((row["id"], status_json(vj.status), row["version"]))
                elif known is not None and vid not in known:
                    stats.imported += await self.import_external(vj)
                    known.add(vid)
                await slices.turn()  # comparing a page takes ~1 ms: requests go on meanwhile
            for start in range(0, len(batch), WRITE_BATCH):
                await self.store.jobs.apply_statuses(batch[start:start + WRITE_BATCH], "sync")
                await slices.turn()  # the SQLite store writes inline: requests go on between batches
            stats.updated += len(batch)
            if not read:
                break
        # Live jobs no page showed (e.g. ended since the last look, so not in the active list): one GET
        # each, their news written WRITE_BATCH at a time (a transaction per job cost more than its GET).
        # What was learnt is written even when a later GET fails: with a thousand ended jobs and a flaky
        # vendor, a cycle that kept nothing until its last GET never made progress.
        news: list[Update] = []
        try:
            for row in unseen.values():
                got = await self.adapter.get(handle_of(row))
                stats.get_requests += 1
                status = self.vanished(row) if got is None else got.status
                if got is None or _changed(row, status):
                    news.append((row["id"], status_json(status), row["version"]))
                if len(news) >= WRITE_BATCH:
                    stats.updated += await self._write_news(news)
                    news = []
        except GatewayError:
            await self._write_news(news)
            raise
        stats.updated += await self._write_news(news)
        stats.seconds = time.monotonic() - started
        self.last = stats
        return stats

    async def _write_news(self, news: list[Update]) -> int:
        """Store statuses learnt one GET at a time (versions compared, as for a page); returns how many."""
        if news:
            await self.store.jobs.apply_statuses(news, "sync")
        return len(news)

    @staticmethod
    def vanished(row: dict[str, Any]) -> JobStatus:
        """What to record when the vendor no longer has the job: a cancel we asked for, or a deletion
        outside the gateway."""
        why = "cancelled: the backend has removed it" if row["cancel_requested"] \
            else "deleted on the backend outside the gateway"
        # No vendor phase: the vendor has no job any more, and its last phase (e.g. Running) would mislead.
        return JobStatus(phase=Phase.CANCELLED, terminal=True, vendor_phase=None, message=why,
                         observed_at=datetime.now(UTC), reason=Reason.CANCELLED, reason_message=why)

    async def import_external(self, vj: VendorJob) -> int:
        """Hook for jobs made outside the gateway (see gateway.background.external)."""
        from gateway.background.external import import_job

        return await import_job(self.store, self.adapter, vj)

    def interval(self, busy: bool = False) -> float:
        """Faster while jobs are starting or stopping, slower when all is quiet."""
        base: float = self.adapter.config.sync_interval
        return max(0.2, min(1.0, base / 5)) if busy else base

    async def step(self) -> float:
        """One guarded cycle; returns the seconds to wait before the next."""
        gap = MIN_CYCLE_GAP - (time.monotonic() - self._last_start)
        if gap > 0:  # woken by a burst of submits: still at most a few cycles a second
            await asyncio.sleep(gap)
        self._last_start = time.monotonic()
        try:
            await self.cycle()
            self.cycles += 1
            if self.idle is not None:
                await self.idle.maybe_check()
            if self.failing:
                log.info("sync_recovered", backend=self.backend)
                await self.store.jobs.mark_stale(self.backend, False)
                self.failing = False
            self.last_ok = time.time()
        except asyncio.CancelledError:
            raise
        except GatewayError as err:
            if not self.failing:
                log.warning("sync_failed", backend=self.backend, error=err.detail)
                self.failing = True
            await self.store.jobs.mark_stale(self.backend, True)
        except Exception as err:  # a bug must not kill the loop; say it once
            if not self.failing:
                log.exception("sync_crashed", backend=self.backend, error=str(err))
                self.failing = True
        # Apart from the statuses: a capacity that cannot be read never marks jobs stale or the sync failing.
        try:
            await self.maybe_read_capacity()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug in an adapter's capacity: say it once, keep syncing
            if not self._capacity_broken:
                log.exception("capacity_read_crashed", backend=self.backend, error=str(err))
                self._capacity_broken = True
        try:
            busy = await self.store.jobs.busy(self.backend, sorted(BUSY))
        except Exception:
            busy = False
        return self.interval(busy)

    async def maybe_read_capacity(self) -> bool:
        """Read the backend's capacity into the store when `capacity_interval` has passed; a failed read
        keeps the last figures (marked with the error). Returns whether it read."""
        if Capability.CAPACITY in self.adapter.unsupported_for():
            return False
        if time.monotonic() - self._capacity_at < self.adapter.config.capacity_interval:
            return False
        self._capacity_at = time.monotonic()
        try:
            snap = await self.adapter.capacity()
        except GatewayError as err:
            await self.store.capacity.failed(self.backend, err.detail)
            return True
        await self.store.capacity.put(self.backend, snap.model_dump(mode="json"), time.time())
        return True

    def health(self) -> dict[str, Any]:
        """For GET /v1/backends."""
        return {"failing": self.failing, "last_ok": self.last_ok, "cycles": self.cycles,
                "last_cycle": {"list_requests": self.last.list_requests, "get_requests": self.last.get_requests,
                               "updated": self.last.updated, "seconds": round(self.last.seconds, 4)}}
