"""Run:ai workload metrics -> the neutral metrics (gateway.core.telemetry), as data and one function."""

from __future__ import annotations

from datetime import datetime

from gateway.core.telemetry import JobMetrics, combine

# neutral name -> the Run:ai metric types it needs
RUNAI_METRICS: dict[str, tuple[str, ...]] = {
    "gpu_utilization": ("GPU_UTILIZATION",),
    "gpu_memory_used": ("GPU_MEMORY_USAGE_BYTES",),
    "gpu_memory_utilization": ("GPU_MEMORY_USAGE_BYTES", "GPU_MEMORY_REQUEST_BYTES"),
    "cpu_utilization": ("CPU_USAGE_CORES", "CPU_REQUEST_CORES"),
    "memory_used": ("CPU_MEMORY_USAGE_BYTES",),
}
GPU_TYPES = ("GPU_UTILIZATION", "GPU_MEMORY_USAGE_BYTES", "GPU_MEMORY_REQUEST_BYTES")

Points = list[tuple[float, float]]


def epoch(stamp: str) -> float:
    """A Run:ai timestamp ("2024-12-20T14:30:00Z" or with a space and milliseconds) as epoch seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00").replace(" ", "T")).timestamp()


def _ratio(num: Points, den: Points) -> Points:
    by_time = dict(den)
    return [(t, 100.0 * v / by_time[t]) for t, v in num if by_time.get(t)]


def runai_metrics(names: list[str], measured: dict[str, list[Points]]) -> JobMetrics:
    """Neutral series from Run:ai measurements (type -> one list of points per label set, e.g. per GPU)."""
    out = JobMetrics()
    has_gpus = any(measured.get(t) for t in GPU_TYPES)
    total = {t: combine(measured.get(t) or [], "sum") for t in measured}
    for name in names:
        if name.startswith("gpu_") and not has_gpus:
            out.add(name, "unavailable", "the workload has no GPUs")
        elif name == "gpu_utilization":
            out.add(name, "exact", "GPU_UTILIZATION, averaged over the workload's GPUs",
                    combine(measured.get("GPU_UTILIZATION") or [], "mean"))
        elif name == "gpu_memory_used":
            out.add(name, "exact", "GPU_MEMORY_USAGE_BYTES, summed over the workload's GPUs",
                    total.get("GPU_MEMORY_USAGE_BYTES", []))
        elif name == "gpu_memory_utilization":
            out.add(name, "derived", "GPU_MEMORY_USAGE_BYTES / GPU_MEMORY_REQUEST_BYTES",
                    _ratio(total.get("GPU_MEMORY_USAGE_BYTES", []), total.get("GPU_MEMORY_REQUEST_BYTES", [])))
        elif name == "cpu_utilization":
            out.add(name, "derived", "CPU_USAGE_CORES / CPU_REQUEST_CORES",
                    _ratio(total.get("CPU_USAGE_CORES", []), total.get("CPU_REQUEST_CORES", [])))
        elif name == "memory_used":
            out.add(name, "exact", "CPU_MEMORY_USAGE_BYTES", total.get("CPU_MEMORY_USAGE_BYTES", []))
    return out
