"""Status sync: one loop per backend, asking the vendor what changed and now and then reading everything.

Two kinds of cycle. A delta (`sync_mode: delta`, the default) asks the adapter what changed since the last
look (Run:ai: one request sorted and filtered by phaseUpdatedAt; ModelArts: counts by phase, see
gateway.core.census) and reads the jobs the gateway acted on one by one; it costs a request or a few
whatever the number of live jobs, so it runs every `delta_interval` and is woken at once by the gateway's
own submits and actions. A whole-list read (every cycle with `sync_mode: full`) costs about one request per
page plus a GET for each live job the pages did not show, and catches what a delta cannot see (deletions,
non-phase changes): in delta mode it runs every `reconcile_interval`, less often if it would spend more
than a quarter of the backend's `request_budget`. A failed poll changes no phase: it marks the backend's
jobs stale, logging once on failure and once on recovery.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from gateway.background.idle import IdleWatch
from gateway.core.adapter import Adapter, Capability, Known, VendorJob
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
ACTED_ON = {Phase.CANCELLING.value, Phase.SUSPENDING.value}  # a gateway action under way: read each delta
RECONCILE_SHARE = 0.25  # of the request budget, at most, for whole-list reads in delta mode
UNPLACED_MEMORY = 60.0  # seconds a record no row took, and a confirmed id, are remembered


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
    kind: str = "full"

    @property
    def requests(self) -> int:
        return self.list_requests + self.get_requests


@dataclass
class Budget:
    """Vendor requests a sync may spend: `rate` a second on average over `window` seconds (a token bucket,
    so a whole-list read may spend a burst that later cycles pay back)."""

    rate: float
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _tokens: float | None = None
    _at: float = 0.0

    def _refill(self) -> float:
        now = self.clock()
        cap = self.rate * self.window
        tokens = cap if self._tokens is None else min(cap, self._tokens + (now - self._at) * self.rate)
        self._tokens, self._at = tokens, now
        return tokens

    def spend(self, n: int) -> None:
        """Count `n` requests made."""
        self._tokens = self._refill() - n

    def tokens(self) -> float:
        """Requests that may be spent now without going over the average."""
        return self._refill()


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
    _full_at: float | None = None  # when the last whole-list read began (monotonic), None: one is due
    _full_cost: int = 0  # the requests it made
    budget: Budget | None = None
    clock: Callable[[], float] = time.monotonic  # when reconciles are due (a test moves it on)
    # A delta may read a job's changes while its row is still pending (the create's answer not stored yet) and
    # cannot place them; the confirmation then stores the create's older status. Records no row took are
    # remembered a while, as are the jobs just confirmed: one met in both is read (a GET) next delta.
    _unplaced: dict[str, float] = field(default_factory=dict)  # vendor id -> when a delta could not place it
    _confirmed: dict[str, float] = field(default_factory=dict)  # vendor id -> when the gateway confirmed it
    _owed: set[str] = field(default_factory=set)  # vendor ids to read next delta

    def __post_init__(self) -> None:
        if self.budget is None:
            self.budget = Budget(self.adapter.config.request_budget, clock=self.clock)

    @property
    def backend(self) -> str:
        return self.adapter.name

    async def cycle(self) -> CycleStats:
        """One pass over the whole list; raises the vendor error when the poll fails."""
        started = time.monotonic()
        began = time.time()
        stats = CycleStats()
        live = await self.store.jobs.live(self.backend)
        adopt = self.adapter.config.adopt_external
        if not live and not adopt:
            self.last = stats
            self.adapter.reconciled(began)  # nothing live: no change to miss
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
            stats.updated += await self._write(batch, slices)
            if not read:
                break
        # Live jobs no page showed (e.g. ended since the last look, so not in the active list): one GET each.
        await self._read_each(list(unseen.values()), stats)
        stats.seconds = time.monotonic() - started
        self.last = stats
        self.adapter.reconciled(began)
        return stats

    def nudge(self, confirmed: str | None = None) -> None:
        """Wake the loop: the gateway just changed something on this backend (with `confirmed`: it stored the
        vendor id of a job it created, whose changes a delta may have read before)."""
        if confirmed is not None:
            if confirmed in self._unplaced:
                self._owed.add(confirmed)
            self._confirmed[confirmed] = time.monotonic()
        self.wake.set()

    def _remember_unplaced(self, vids: list[str]) -> None:
        now = time.monotonic()
        for vid in vids:
            self._unplaced[vid] = now
            if vid in self._confirmed:
                self._owed.add(vid)
        for memo in (self._unplaced, self._confirmed):
            if len(memo) > 1000:  # (a minute is far longer than a create's answer takes to be stored)
                for vid in [v for v, t in memo.items() if now - t > UNPLACED_MEMORY]:
                    del memo[vid]

    async def delta_cycle(self) -> CycleStats | None:
        """One delta: what the adapter says changed, plus a GET of each job the gateway is acting on (or the
        adapter could not place); None when the adapter cannot give a delta now (read the whole list)."""
        started = time.monotonic()
        stats = CycleStats(kind="delta")
        needs_known = self.adapter.delta_needs_known
        # (Without a need for them, reading every live job each second cost more than the delta itself.)
        rows = {r["backend_job_id"]: r for r in await self.store.jobs.live(self.backend)} if needs_known else {}
        if not (rows if needs_known else await self.store.jobs.has_live(self.backend)):
            self.adapter.reconciled(time.time())  # nothing live: no change to miss
            self.last = stats
            return stats
        delta = await self.adapter.delta([Known(vid, r["vendor_kind"]) for vid, r in rows.items()])
        if delta is None:
            return None
        owed, self._owed = sorted(self._owed), set()
        if not needs_known:
            named = [vj.handle.backend_job_id for vj in delta.jobs] + delta.moved + owed
            rows = {r["backend_job_id"]: r for r in await self.store.jobs.live_of(self.backend, named)}
            rows.update({r["backend_job_id"]: r for r in await self.store.jobs.acting(self.backend,
                                                                                       sorted(ACTED_ON))})
        stats.list_requests = delta.requests
        batch: list[Update] = []
        seen: set[str] = set()
        known: set[str] | None = None
        self._remember_unplaced([vj.handle.backend_job_id for vj in delta.jobs
                                 if vj.handle.backend_job_id not in rows])
        for vj in delta.jobs:
            vid = vj.handle.backend_job_id
            row = rows.get(vid)
            if row is None and self.adapter.config.adopt_external:
                if known is None:
                    known = await self.store.jobs.known_vendor_ids(self.backend)
                if vid not in known:
                    stats.imported += await self.import_external(vj)
                    known.add(vid)
            if row is None or vid in seen:
                continue
            seen.add(vid)
            if _changed(row, vj.status):
                batch.append((row["id"], status_json(vj.status), row["version"]))
        stats.updated += await self._write(batch, Slices())
        # Read one by one: what the adapter could not place, and what the gateway is acting on (a cancelled
        # Run:ai workload leaves the list without a last phase change to show).
        check = [vid for vid in [*delta.moved, *owed] if vid in rows and vid not in seen]
        check += [vid for vid, r in rows.items() if vid not in seen and vid not in delta.moved
                  and (r["cancel_requested"] or r["phase"] in ACTED_ON)]
        await self._read_each([rows[vid] for vid in check], stats)
        stats.seconds = time.monotonic() - started
        self.last = stats
        return stats

    def _full_due(self) -> bool:
        """Whether this cycle reads the whole list."""
        if self.adapter.config.sync_mode == "full" or self._full_at is None:
            return True
        assert self.budget is not None
        period = max(float(self.adapter.config.reconcile_interval),
                     self._full_cost / (RECONCILE_SHARE * self.budget.rate))
        waited = self.clock() - self._full_at
        # Paid from what the deltas left of the budget; never put off past twice its period.
        return waited >= 2 * period or (waited >= period and self.budget.tokens() >= self._full_cost)

    async def _sync_once(self) -> CycleStats:
        """A delta, or a whole-list read when one is due or the adapter has no delta to give."""
        if not self._full_due():
            stats = await self.delta_cycle()
            if stats is not None:
                return stats
        at = self.clock()
        self._full_at = None  # (until it completes: a failed one is due again)
        stats = await self.cycle()
        self._full_at, self._full_cost = at, stats.requests
        return stats

    async def _write(self, batch: list[Update], slices: Slices) -> int:
        """Store statuses WRITE_BATCH a transaction (each only if its row is still at the version read);
        returns how many."""
        for start in range(0, len(batch), WRITE_BATCH):
            await self.store.jobs.apply_statuses(batch[start:start + WRITE_BATCH], "sync")
            await slices.turn()  # the SQLite store writes inline: requests go on between batches
        return len(batch)

    async def _read_each(self, rows: list[dict[str, Any]], stats: CycleStats) -> None:
        """One GET per row, the news written WRITE_BATCH at a time (a transaction per job cost more than its
        GET). What was learnt is written even when a later GET fails: with a thousand ended jobs and a flaky
        vendor, a cycle that kept nothing until its last GET never made progress."""
        news: list[Update] = []
        slices = Slices()
        try:
            for row in rows:
                got = await self.adapter.get(handle_of(row))
                stats.get_requests += 1
                status = self.vanished(row) if got is None else got.status
                if got is None or _changed(row, status):
                    news.append((row["id"], status_json(status), row["version"]))
                if len(news) >= WRITE_BATCH:
                    stats.updated += await self._write(news, slices)
                    news = []
        finally:
            stats.updated += await self._write(news, slices)

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
        """Delta mode: every delta_interval, or as long as the last delta's requests take at the budget's
        rate (a delta that had many changes to find). Full mode: faster while jobs are starting or stopping,
        slower when all is quiet."""
        cfg = self.adapter.config
        assert self.budget is not None
        if cfg.sync_mode == "delta":
            spent = self.last.requests if self.last.kind == "delta" else 0
            return max(float(cfg.delta_interval), spent / self.budget.rate)
        base: float = cfg.sync_interval
        return max(0.2, min(1.0, base / 5)) if busy else base

    async def step(self) -> float:
        """One guarded cycle; returns the seconds to wait before the next."""
        cfg = self.adapter.config
        # A wake (a submit, an action) brings the next cycle forward, never closer than this to the last: a
        # burst of submits woke a delta every half second, and each re-read the burst's changes.
        least = min(MIN_CYCLE_GAP, cfg.delta_interval) if cfg.sync_mode == "delta" else MIN_CYCLE_GAP
        gap = least - (time.monotonic() - self._last_start)
        if gap > 0:  # woken by a burst of submits: still at most a few cycles a second
            await asyncio.sleep(gap)
        self._last_start = time.monotonic()
        assert self.budget is not None
        try:
            stats = await self._sync_once()
            self.budget.spend(stats.requests)
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
            self.budget.spend(1)  # (at least the request that failed)
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
        if cfg.sync_mode == "delta":
            return self.interval()
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
                "mode": self.adapter.config.sync_mode,
                "last_cycle": {"kind": self.last.kind, "list_requests": self.last.list_requests,
                               "get_requests": self.last.get_requests,
                               "updated": self.last.updated, "seconds": round(self.last.seconds, 4)}}
