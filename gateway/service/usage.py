"""GPU-hours and utilization across backends, from the stored transitions of every job the gateway knows."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.core.adapter import Adapter
from gateway.core.errors import BadRequest
from gateway.core.telemetry import job_gpus, running_seconds
from gateway.service.attempts import attempt_windows
from gateway.service.principal import Principal
from gateway.service.rows import dt
from gateway.store import ListFilters, Store

GROUPINGS = ("backend", "tenant", "project")


def check_group_by(group_by: str) -> str:
    """backend | tenant | project | label:<key>, or a 400 naming group_by."""
    if group_by in GROUPINGS or (group_by.startswith("label:") and len(group_by) > 6):
        return group_by
    raise BadRequest(f"group_by must be one of {', '.join(GROUPINGS)} or label:<key>, not {group_by!r}",
                     errors=[{"loc": ["query", "group_by"], "msg": "unknown grouping"}])


@dataclass
class Bucket:
    """One group's figures."""

    key: str
    jobs: int = 0
    gpu_hours: float = 0.0
    running_hours: float = 0.0
    util_weight: float = 0.0  # GPU-hours of the jobs whose utilization is known
    util_sum: float = 0.0
    cost: float = 0.0
    unpriced_gpu_hours: float = 0.0

    def add(self, seconds: float, gpus: float, util: float | None, price: float | None,
            new_job: bool = True) -> None:
        gh = seconds * gpus / 3600
        self.jobs += int(new_job)
        self.gpu_hours += gh
        self.running_hours += seconds / 3600
        if util is not None and gh > 0:
            self.util_weight += gh
            self.util_sum += util * gh
        if price is None:
            self.unpriced_gpu_hours += gh
        else:
            self.cost += gh * price

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "jobs": self.jobs, "gpu_hours": round(self.gpu_hours, 6),
                "running_hours": round(self.running_hours, 6),
                "avg_gpu_utilization": round(self.util_sum / self.util_weight, 2) if self.util_weight else None,
                "cost": round(self.cost, 4), "unpriced_gpu_hours": round(self.unpriced_gpu_hours, 6)}


def _key(row: dict[str, Any], group_by: str) -> str:
    if group_by.startswith("label:"):
        return str((row["labels"] or {}).get(group_by[6:], "(none)"))
    value = row[group_by]
    return "(none)" if value is None else str(value)


async def usage(store: Store, adapters: dict[str, Adapter[Any]], currency: str, who: Principal, group_by: str,
                since: float | None, until: float | None) -> dict[str, Any]:
    """GPU-hours (GPUs x nodes x time in RUNNING), mean GPU utilization where known and cost where priced,
    grouped; a tenant sees its own jobs (and imported jobs of its projects), an admin every job."""
    group_by = check_group_by(group_by)
    until = time.time() if until is None else until
    since = 0.0 if since is None else since
    if since >= until:
        raise BadRequest("since must be before until", errors=[{"loc": ["query", "since"], "msg": "after until"}])
    f = ListFilters(include_deleted=True, viewer=who)
    rows = await store.jobs.usage_rows(f, since, until)
    changes = await store.events.phases_of([r["id"] for r in rows])
    retried = [r["id"] for r in rows if int(r.get("attempt") or 1) > 1]
    earlier = await store.attempts.of(retried) if retried else {}
    groups: dict[str, Bucket] = {}
    total = Bucket("total")
    for row in rows:
        gpus = job_gpus(row["spec"] or {}, row["status"])
        util = (row["status"] or {}).get("gpu_utilization")
        counted: set[str] = set()
        # Each attempt counts on the backend it ran on, at that backend's price.
        for attempt, lo, hi in attempt_windows(row, earlier.get(row["id"], []), until):
            seconds = running_seconds(changes.get(row["id"], []), max(lo, since), min(hi, until))
            if seconds <= 0:
                continue
            backend = attempt["backend"]
            adapter = adapters.get(backend)
            priced = adapter.gpu_hour_price({**(row["spec"] or {}), "backend": backend}) if adapter and gpus \
                else None
            price = None if priced is None else priced[1]
            key = _key({**row, "backend": backend}, group_by)
            groups.setdefault(key, Bucket(key)).add(seconds, gpus, util, price, new_job=key not in counted)
            total.add(seconds, gpus, util, price, new_job=not counted)
            counted.add(key)
    return {"group_by": group_by, "since": dt(since) if since else None, "until": dt(until), "currency": currency,
            "groups": [b.as_json() for b in sorted(groups.values(), key=lambda b: -b.gpu_hours)],
            "total": {k: v for k, v in total.as_json().items() if k != "key"}}
