"""Neutral job metrics: the series names every backend is asked for, and how a backend reports each."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# name -> unit. A backend gives each exactly, derives it from what it has, or says it cannot.
METRICS: dict[str, str] = {
    "gpu_utilization": "percent",
    "gpu_memory_used": "bytes",
    "gpu_memory_utilization": "percent",
    "cpu_utilization": "percent",
    "memory_used": "bytes",
}
DEFAULT_METRICS = ("gpu_utilization", "gpu_memory_used", "cpu_utilization", "memory_used")

MetricOutcome = Literal["exact", "derived", "unavailable"]


@dataclass
class Series:
    """One metric over time: (epoch seconds, value) pairs, oldest first."""

    name: str
    points: list[tuple[float, float]] = field(default_factory=list)

    @property
    def unit(self) -> str:
        """The metric's unit (see METRICS)."""
        return METRICS[self.name]


@dataclass(frozen=True)
class MetricNote:
    """How a backend produced one metric (or why it could not)."""

    name: str
    outcome: MetricOutcome
    detail: str


@dataclass
class JobMetrics:
    """A job's metrics from its backend: the series and a note for every metric asked for."""

    series: list[Series] = field(default_factory=list)
    report: list[MetricNote] = field(default_factory=list)

    def add(self, name: str, outcome: MetricOutcome, detail: str,
            points: Iterable[tuple[float, float]] | None = None) -> None:
        """Record one metric; an unavailable metric gets a note and no series, never invented points."""
        self.report.append(MetricNote(name, outcome, detail))
        if outcome != "unavailable":
            self.series.append(Series(name, sorted(points or [])))

    def since(self, epoch: float) -> JobMetrics:
        """Only the points at or after `epoch`."""
        return JobMetrics([Series(s.name, [p for p in s.points if p[0] >= epoch]) for s in self.series],
                          list(self.report))


def combine(per_unit: Iterable[Iterable[tuple[float, float]]], how: Literal["mean", "sum"]) -> list[tuple[float, float]]:
    """Merge per-GPU or per-node series point by point (same timestamps): their mean or their sum."""
    by_time: dict[float, list[float]] = {}
    for points in per_unit:
        for t, v in points:
            by_time.setdefault(t, []).append(v)
    return [(t, (sum(vs) / len(vs)) if how == "mean" else sum(vs)) for t, vs in sorted(by_time.items())]


def job_gpus(spec: dict[str, Any], status: dict[str, Any] | None = None) -> float:
    """GPUs a job holds: per node (a fraction for a GPU portion) x nodes, or x replicas for an inference
    workload (the replicas its backend reports, else serving.min_replicas)."""
    res = spec.get("resources") or {}
    try:
        per = float(res.get("gpus") or 0)
        if spec.get("kind") == "inference":
            replicas = (status or {}).get("desired_replicas")
            if replicas is None:
                replicas = max(1, int((spec.get("serving") or {}).get("min_replicas", 1) or 0))
            return per * int(replicas)
        return per * int(res.get("nodes") or 1)
    except (TypeError, ValueError):
        return 0.0


def running_seconds(changes: Sequence[tuple[float, str]], since: float, until: float) -> float:
    """Seconds spent in RUNNING within [since, until], from a job's phase changes (oldest first)."""
    total = 0.0
    for i, (at, phase) in enumerate(changes):
        if phase != "RUNNING":
            continue
        end = changes[i + 1][0] if i + 1 < len(changes) else until
        total += max(0.0, min(end, until) - max(at, since))
    return total
