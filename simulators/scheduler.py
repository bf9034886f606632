"""A GPU scheduler both simulators share: pools with a GPU count, per-project quotas, priority-then-FIFO
admission and preemption of over-quota work. Each simulator reports its decisions in the vendor's words.

Like the job timelines, the scheduler is read, never ticked: `advance(now)` replays what happened since
the last read (jobs ending free GPUs, waiting jobs start at that moment), so a simulator with thousands of
idle jobs costs nothing, and a job admitted while nobody was asking starts at the right time. With no
pool configured, capacity is unlimited and every job is admitted at once (the simulators' old behaviour).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Why a claim waits (the simulator words it as its vendor does).
CAPACITY = "capacity"  # not enough free GPUs in any pool it may use
NO_POOL = "no-pool"  # none of the pools it asks for exists
OVER_QUOTA = "over-quota"  # non-preemptible, and its project's deserved quota is used up
OVER_LIMIT = "over-limit"  # its project's limit would be exceeded


@dataclass
class Claim:
    """One job's demand for GPUs."""

    key: str
    pools: list[str]  # the pools it may run in, in order of preference
    gpus: float
    project: str = ""
    priority: int = 0  # higher first
    preemptible: bool = True
    seq: int = 0  # submission order (FIFO among equal priorities)
    queued_at: float = 0.0  # when it last started waiting
    pending_seconds: float = 0.0  # time spent waiting before the current wait
    pool: str | None = None  # where it runs, once admitted
    admitted_at: float | None = None
    release_at: float | None = None  # when it stops holding its GPUs (None: until told)
    hold_until: float = -math.inf  # not admitted before (a job preempted by hand stays out a while)
    reason: str | None = None  # why it waits now
    detail: str = ""  # the reason in numbers (e.g. "4 GPUs asked, 2 free in a100")
    preemptions: int = 0

    def waited(self, now: float) -> float:
        """Seconds spent waiting in all, up to `now`."""
        return self.pending_seconds + (now - self.queued_at if self.admitted_at is None else 0.0)


@dataclass
class Scheduler:
    """GPU pools, quotas and the claims on them."""

    capacity: dict[str, float] = field(default_factory=dict)  # pool -> GPUs; empty: unlimited
    deserved: dict[str, float] = field(default_factory=dict)  # project -> GPUs deserved in each pool
    limit: dict[str, float] = field(default_factory=dict)  # project -> most GPUs it may hold in a pool
    open_pools: bool = False  # a pool with no GPU count is unlimited (else it does not exist)
    # Called when a claim is admitted at time t; returns when it will stop holding its GPUs (or None).
    on_start: Callable[[Claim, float], float | None] = lambda c, t: None
    # Called when a claim is preempted at t by another (None: by hand); True when it waits again (False: ended).
    on_preempt: Callable[[Claim, float, Claim | None], bool] = lambda c, t, by: True
    waiting: dict[str, Claim] = field(default_factory=dict)
    running: dict[str, Claim] = field(default_factory=dict)
    clock: float = -math.inf
    _seq: int = 0

    @property
    def limited(self) -> bool:
        """Whether any pool has a GPU count (else every claim runs at once)."""
        return bool(self.capacity)

    # -- what the simulators call ---------------------------------------------------------------------
    def submit(self, claim: Claim, now: float) -> bool:
        """Queue a claim and schedule; True when it was admitted at once."""
        self.advance(now)
        self._seq += 1
        claim.seq, claim.queued_at = self._seq, now
        self.waiting[claim.key] = claim
        self._schedule(now)
        return claim.admitted_at is not None

    def stop(self, key: str, at: float) -> None:
        """The job stops (deleted, suspended, terminated): it leaves the queue, or frees its GPUs at `at`."""
        c = self.waiting.pop(key, None)
        if c is not None:
            c.pending_seconds = c.waited(at)
            return
        c = self.running.get(key)
        if c is not None and (c.release_at is None or at < c.release_at):
            c.release_at = at

    def requeue(self, claim: Claim, now: float) -> None:
        """A stopped job asks to run again (a resume)."""
        self.advance(now)
        self.running.pop(claim.key, None)
        claim.admitted_at, claim.pool, claim.release_at, claim.queued_at = None, None, None, now
        self.waiting[claim.key] = claim
        self._schedule(now)

    def preempt(self, key: str, now: float, hold: float = 0.0) -> bool:
        """Preempt a running claim as the vendor would (`POST /_sim/preempt`), keeping it out for `hold`
        seconds; False if it is not running."""
        self.advance(now)
        c = self.running.get(key)
        if c is None:
            return False
        c.hold_until = now + hold
        self._evict(c, now, None)
        self._schedule(now)
        return True

    def advance(self, now: float) -> None:
        """Replay every release due by `now`, admitting waiting claims at the moment GPUs freed up."""
        if now <= self.clock or (not self.limited and not self.waiting):  # unlimited: nothing waits but a
            return                                                         # job preempted by hand
        while True:
            due = min([c.release_at for c in self.running.values() if c.release_at is not None and
                       c.release_at <= now] + [c.hold_until for c in self.waiting.values()
                                               if self.clock < c.hold_until <= now], default=None)
            t = now if due is None else max(due, self.clock)
            for c in [c for c in self.running.values() if c.release_at is not None and c.release_at <= t]:
                del self.running[c.key]
            self.clock = t
            self._schedule(t)
            if due is None:
                return

    def export(self) -> dict[str, Any]:
        """The queue and the running claims, for a simulator's state file (times on this process's clock)."""
        return {"waiting": self.waiting, "running": self.running, "clock": self.clock, "seq": self._seq}

    def restore(self, saved: dict[str, Any], shift: float) -> None:
        """Take an exported state up again, its monotonic times moved by `shift` onto this process's clock."""
        for c in [*saved["waiting"].values(), *saved["running"].values()]:
            c.queued_at += shift
            c.admitted_at = None if c.admitted_at is None else c.admitted_at + shift
            c.release_at = None if c.release_at is None else c.release_at + shift
            c.hold_until += shift
        self.waiting, self.running = saved["waiting"], saved["running"]
        self.clock, self._seq = saved["clock"] + shift, saved["seq"]

    # -- what the APIs report ----------------------------------------------------------------------------
    def used(self, pool: str, project: str | None = None, non_preemptible: bool = False) -> float:
        """GPUs held in `pool` (by one project; only by non-preemptible claims)."""
        return sum(c.gpus for c in self.running.values() if c.pool == pool
                   and (project is None or c.project == project) and (not non_preemptible or not c.preemptible))

    def queued(self, pool: str | None = None) -> list[Claim]:
        """Waiting claims (that may use `pool`), in the order they would be admitted."""
        out = [c for c in self.waiting.values() if pool is None or pool in c.pools]
        return sorted(out, key=lambda c: (-c.priority, c.seq))

    def free(self, pool: str) -> float:
        """GPUs free in `pool` (inf when unlimited)."""
        cap = self.capacity.get(pool)
        if cap is None:
            return math.inf if self.open_pools or not self.limited else 0.0
        return max(0.0, cap - self.used(pool))

    # -- the decisions -------------------------------------------------------------------------------------
    def _schedule(self, t: float) -> None:
        for c in self.queued():
            self._place(c, t)

    def _place(self, c: Claim, t: float) -> None:
        if t < c.hold_until:
            return None
        if not self.limited or c.gpus <= 0:
            return self._admit(c, c.pools[0] if c.pools else "default", t)
        reasons: list[tuple[str, str]] = []
        for pool in c.pools:
            if pool not in self.capacity:
                if self.open_pools:
                    return self._admit(c, pool, t)
                reasons.append((NO_POOL, f"no node pool {pool}"))
                continue
            mine = self.used(pool, c.project)
            cap_of_project = self.limit.get(c.project)
            if cap_of_project is not None and mine + c.gpus > cap_of_project:
                reasons.append((OVER_LIMIT, f"project {c.project} may hold {cap_of_project:g} GPUs in {pool}, "
                                f"holds {mine:g}, asks {c.gpus:g}"))
                continue
            deserved = self.deserved.get(c.project)
            if not c.preemptible and deserved is not None and \
                    self.used(pool, c.project, non_preemptible=True) + c.gpus > deserved:
                reasons.append((OVER_QUOTA, f"project {c.project} deserves {deserved:g} GPUs in {pool}; "
                                f"non-preemptible work may not go over it"))
                continue
            free = self.free(pool)
            if c.gpus <= free:
                return self._admit(c, pool, t)
            victims = self._victims(c, pool, free)
            if victims is not None:
                for v in victims:
                    self._evict(v, t, c)
                return self._admit(c, pool, t)
            reasons.append((CAPACITY, f"{c.gpus:g} GPUs asked, {free:g} of {self.capacity[pool]:g} free in {pool}"))
        # The most telling reason: a quota or limit says more than "full", "full" more than "no such pool".
        rank = {OVER_LIMIT: 0, OVER_QUOTA: 1, CAPACITY: 2, NO_POOL: 3}
        c.reason, c.detail = min(reasons, key=lambda r: rank[r[0]]) if reasons else (CAPACITY, "")
        return None

    def _in_quota(self, c: Claim, pool: str) -> bool:
        deserved = self.deserved.get(c.project)
        return deserved is not None and self.used(pool, c.project) + c.gpus <= deserved

    def _victims(self, c: Claim, pool: str, free: float) -> list[Claim] | None:
        """Running preemptible claims whose eviction makes room for `c`: over-quota work of other projects
        when `c` is within its quota, lower-priority work of its own project; None when they are not enough."""
        in_quota = self._in_quota(c, pool)
        held = {p: self.used(pool, p) for p in {r.project for r in self.running.values() if r.pool == pool}}
        candidates = sorted((r for r in self.running.values() if r.pool == pool and r.preemptible),
                            key=lambda r: (r.priority, -(r.admitted_at or 0.0)))
        chosen: list[Claim] = []
        for r in candidates:
            if free >= c.gpus:
                break
            over = r.project != c.project and in_quota and held[r.project] > self.deserved.get(r.project, 0.0)
            if over or (r.project == c.project and r.priority < c.priority):
                chosen.append(r)
                held[r.project] -= r.gpus
                free += r.gpus
        return chosen if free >= c.gpus else None

    def _admit(self, c: Claim, pool: str, t: float) -> None:
        self.waiting.pop(c.key, None)
        c.pending_seconds = c.waited(t)
        c.pool, c.admitted_at, c.reason, c.detail = pool, t, None, ""
        self.running[c.key] = c
        c.release_at = self.on_start(c, t)

    def _evict(self, c: Claim, t: float, by: Claim | None) -> None:
        del self.running[c.key]
        c.preemptions += 1
        c.pool, c.admitted_at, c.release_at = None, None, None
        if self.on_preempt(c, t, by):
            c.queued_at = t
            self.waiting[c.key] = c
