"""Placing a job whose spec says `backend: auto` or lists candidates.

`choose` is a pure function over what the gateway knows of each candidate (an `Offer`): whether it can run
the job at all, the free GPUs and queue it last saw there, the price. `Placer` builds the offers: each
candidate's feasibility is decided before any vendor call (the spec translates under --strict, the GPU type
and node count exist there, the project's quota allows it), and capacity comes from the store's snapshot
(read by the sync loops), cached here for a second, so a placed submit costs no vendor call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.core.adapter import Adapter
from gateway.core.capacity import Capacity
from gateway.core.config import Config
from gateway.core.errors import GatewayError, ValidationError
from gateway.core.models import JobSpec
from gateway.core.placement import Candidate, Placement, Policy
from gateway.core.translation import Translation, enforce_strict
from gateway.store import Store

SNAPSHOT_SECONDS = 1.0  # how long a capacity snapshot read from the store is reused


@dataclass
class Offer:
    """What the gateway knows of one candidate when it chooses."""

    backend: str
    feasible: bool
    why: str
    free: float | None = None
    queued: int | None = None
    age: float | None = None
    price: float | None = None


def choose(policy: Policy, need: float, offers: list[Offer]) -> tuple[str, str] | None:
    """(backend, why) by the policy among feasible offers (in order of preference); None when none is."""
    feasible = [(i, o) for i, o in enumerate(offers) if o.feasible]
    if not feasible:
        return None

    def fits(o: Offer) -> bool:  # (a job without GPUs fits wherever it can run)
        return need <= 0 or (o.free is not None and o.free >= need)

    def queue(o: Offer) -> float:
        return math.inf if o.queued is None else float(o.queued)

    if policy == "ordered":
        _, o = next(((i, o) for i, o in feasible if fits(o)), feasible[0])
        why = "the first candidate with the GPUs free" if fits(o) else \
            "no candidate has the GPUs free: the first that can run it"
        return o.backend, why
    if policy == "cheapest":
        def cost(item: tuple[int, Offer]) -> tuple[bool, float, bool, float, int]:
            i, o = item
            return o.price is None, o.price or 0.0, not fits(o), queue(o), i

        _, o = min(feasible, key=cost)
        price = "unpriced" if o.price is None else f"{o.price:g} per hour"
        return o.backend, f"the cheapest that can run it ({price})" + \
            ("; its GPUs are free now" if fits(o) else "; it may wait for GPUs")
    free_now = [(i, o) for i, o in feasible if fits(o)]
    if free_now:
        _, o = free_now[0]
        return o.backend, "it needs no GPU: the first that can run it" if need <= 0 else f"GPUs free now ({o.free:g})"
    _, o = min(feasible, key=lambda item: (queue(item[1]), item[0]))
    return o.backend, "no candidate has the GPUs free: the shortest queue" + \
        ("" if o.queued is None else f" ({o.queued} waiting)")


def max_wait_of(spec: JobSpec, config: Config) -> float | None:
    """Seconds a job may wait for GPUs before it moves: its spec's, else the config's for a job the gateway
    placed; None: it stays where it waits."""
    wait = spec.placement.max_wait if spec.placement else None
    if wait is None and spec.placed:
        wait = config.placement.max_wait
    return wait


@dataclass
class Placer:
    """Builds the offers for a job and records the decision."""

    config: Config
    store: Store
    adapters: dict[str, Adapter[Any]]
    _snapshots: dict[str, tuple[float, Capacity | None]] = field(default_factory=dict)

    def candidates(self, spec: JobSpec) -> list[str]:
        """The backends an `auto` or list spec may run on, in order of preference (a 422 for an unknown one)."""
        configured = [b.name for b in self.config.backends]
        if not isinstance(spec.backend, list):
            return configured
        unknown = [(i, n) for i, n in enumerate(spec.backend) if n not in configured]
        if unknown:
            raise ValidationError(f"unknown backend {unknown[0][1]!r}; configured: {', '.join(configured)}",
                                  errors=[{"loc": ["backend", i], "msg": f"no backend named {n!r}"}
                                          for i, n in unknown])
        return list(spec.backend)

    async def snapshot(self, backend: str) -> Capacity | None:
        """The capacity the sync loop last read from a backend (reused for a second), with its age."""
        now = time.monotonic()
        hit = self._snapshots.get(backend)
        if hit is not None and now - hit[0] < SNAPSHOT_SECONDS:
            return hit[1]
        got = await self.store.capacity.get(backend)
        cap = None
        if got and got["snapshot"]:
            cap = Capacity.model_validate(got["snapshot"])
            cap.age_seconds = None if got["age_seconds"] is None else round(got["age_seconds"], 1)
        self._snapshots[backend] = (now, cap)
        return cap

    async def place(self, spec: JobSpec, job_id: str) -> tuple[Placement, Translation]:
        """Decide where a placed job goes; the chosen backend's translation with it. A 422 listing every
        candidate and why when none can run it."""
        policy: Policy = (spec.placement.policy if spec.placement and spec.placement.policy
                          else self.config.placement.policy)
        res = spec.resources
        per_node = res.gpus or 0.0
        need = per_node * res.nodes
        offers: list[Offer] = []
        translations: dict[str, Translation] = {}
        for name in self.candidates(spec):
            adapter = self.adapters[name]
            try:
                tr = adapter.translate(spec.model_copy(update={"backend": name}), job_id)
                enforce_strict(tr.report)
            except GatewayError as err:
                offers.append(Offer(name, False, err.detail))
                continue
            cap = await self.snapshot(name)
            free = cap.free_for(res.gpu_type, per_node or None) if cap else None
            queued = cap.queued_jobs if cap else None
            if cap is not None and queued is None:
                pools = cap.pools_for(res.gpu_type, per_node or None)
                counts = [p.queued for p in pools if p.queued is not None]
                queued = sum(counts) if counts else None
            quota = _quota_problem(cap, tr.project, need, spec.preemptible) if cap else None
            if quota is not None:
                offers.append(Offer(name, False, quota, free, queued, cap.age_seconds if cap else None))
                continue
            own = adapter.config.price_per_gpu_hour
            priced = adapter.gpu_hour_price({**spec.model_dump(mode="json", exclude_none=True), "backend": name})
            unit = own if own is not None else (None if priced is None else priced[1])
            price = None if unit is None else round(unit * max(need, 0.0), 4)
            why = "can run it" + ("" if free is None else f": {free:g} GPUs free when last seen")
            offers.append(Offer(name, True, why, free, queued, cap.age_seconds if cap else None, price))
            translations[name] = tr
        picked = choose(policy, need, offers)
        if picked is None:
            raise ValidationError("no candidate backend can run this job: " +
                                  "; ".join(f"{o.backend}: {o.why}" for o in offers),
                                  errors=[{"loc": ["backend", o.backend], "msg": o.why} for o in offers])
        chosen, why = picked
        placement = Placement(policy=policy, chosen=chosen, why=why, decided_at=datetime.now(UTC), candidates=[
            Candidate(backend=o.backend, feasible=o.feasible, why=o.why, free_gpus=o.free, queued=o.queued,
                      capacity_age_seconds=o.age, price_per_hour=o.price) for o in offers])
        return placement, translations[chosen]


def _quota_problem(cap: Capacity, project: str | None, need: float, preemptible: bool | None) -> str | None:
    """Why the project's quota can never allow the job there (in none of its pools), or None."""
    problems: list[str | None] = []
    for q in cap.quotas:
        if project is None or q.project != project:
            continue
        if q.limit_gpus is not None and need > q.limit_gpus:
            problems.append(f"project {project} may hold at most {q.limit_gpus:g} GPUs in {q.pool}; "
                            f"the job asks {need:g}")
        elif preemptible is False and q.deserved_gpus is not None and need > q.deserved_gpus:
            problems.append(f"project {project} deserves {q.deserved_gpus:g} GPUs in {q.pool}; non-preemptible "
                            f"work may not go over it and the job asks {need:g}")
        else:
            problems.append(None)
    return problems[0] if problems and all(problems) else None
