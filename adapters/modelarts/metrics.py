"""ModelArts training-task metrics -> the neutral metrics (gateway.core.telemetry), as data and one function.

ModelArts answers, per task, one value per minute since the task started, without timestamps: the
n-th value is placed at start_time + n x the sample length. Everything is a percentage, so byte
figures are derived from the flavor's memory where the flavor says it, and are otherwise unavailable.
"""

from __future__ import annotations

from typing import Any

from gateway.core.telemetry import JobMetrics, combine

GIB = 2 ** 30
Points = list[tuple[float, float]]


def flavor_memory_bytes(record: dict[str, Any]) -> float | None:
    """A node's memory from the job's flavor_detail (None when the record does not say)."""
    mem = ((((record.get("spec") or {}).get("resource") or {}).get("flavor_detail") or {}).get("flavor_info")
           or {}).get("memory") or {}
    size = mem.get("size")
    if not isinstance(size, int | float):
        return None
    return float(size) * {"GB": 10 ** 9, "GiB": GIB, "MB": 10 ** 6, "MiB": 2 ** 20}.get(str(mem.get("unit")), 10 ** 9)


def place(values: list[float], start: float, step: float) -> Points:
    """Per-minute values as (end of its minute, value) points from the task's start."""
    return [(start + step * (i + 1), float(v)) for i, v in enumerate(values)]


def modelarts_metrics(names: list[str], per_task: list[dict[str, Points]], node_memory: float | None) -> JobMetrics:
    """Neutral series from each task's metrics (ModelArts name -> placed points)."""
    out = JobMetrics()

    def merged(key: str, how: str = "mean") -> Points:
        return combine([t[key] for t in per_task if key in t], "sum" if how == "sum" else "mean")

    accel = "npu" if any("npuUtil" in t for t in per_task) else "gpu"
    has_gpus = any(f"{accel}Util" in t for t in per_task)
    for name in names:
        if name.startswith("gpu_") and not has_gpus:
            out.add(name, "unavailable", "the job's flavor has no GPUs" if per_task else "no task has reported yet")
        elif name == "gpu_utilization":
            out.add(name, "exact", f"{accel}Util, averaged over the job's tasks", merged(f"{accel}Util"))
        elif name == "gpu_memory_utilization":
            out.add(name, "exact", f"{accel}MemUsage, averaged over the job's tasks", merged(f"{accel}MemUsage"))
        elif name == "gpu_memory_used":
            out.add(name, "unavailable", f"ModelArts reports GPU memory only as a percentage ({accel}MemUsage); "
                    "see gpu_memory_utilization")
        elif name == "cpu_utilization":
            out.add(name, "exact", "cpuUsage, averaged over the job's tasks", merged("cpuUsage"))
        elif name == "memory_used":
            if node_memory is None:
                out.add(name, "unavailable", "memUsage is a percentage and the job's flavor does not give its memory")
            else:
                pts = combine([[(t, v / 100 * node_memory) for t, v in task.get("memUsage", [])]
                               for task in per_task], "sum")
                out.add(name, "derived", "memUsage (percent) x the flavor's memory, summed over the job's tasks", pts)
    return out
