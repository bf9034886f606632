"""Prometheus metrics of the gateway, registered once per process."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestStats(Collector):
    """tjg_http_requests_total and tjg_http_request_seconds, counted in plain dicts and turned into metric
    families at scrape time: a Prometheus child takes a lock per inc/observe, and the two were about 1 µs
    of every GET. Requests are counted on the event loop only, so no lock is needed."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], list[float]] = {}  # bucket counts (+Inf last), then the sum

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request."""
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        h = self.latency.get((route, method))
        if h is None:
            h = self.latency[(route, method)] = [0.0] * (len(HTTP_BUCKETS) + 2)
        h[bisect_left(HTTP_BUCKETS, seconds)] += 1  # a bucket's bound is inclusive (le)
        h[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        """The two metric families, for the registry."""
        total = CounterMetricFamily("tjg_http_requests", "Gateway HTTP requests", labels=["route", "method", "status"])
        for (route, method, status), n in list(self.requests.items()):
            total.add_metric([route, method, str(status)], n)
        yield total
        latency = HistogramMetricFamily("tjg_http_request_seconds", "Gateway HTTP request latency",
                                        labels=["route", "method"])
        for (route, method), h in list(self.latency.items()):
            running, buckets = 0.0, []
            for bound, count in zip((*map(str, HTTP_BUCKETS), "+Inf"), h[:-1], strict=True):
                running += count
                buckets.append((bound, running))
            latency.add_metric([route, method], buckets, h[-1])
        yield latency


HTTP = RequestStats()
REGISTRY.register(HTTP)
VENDOR_CALLS = Counter("tjg_vendor_calls_total", "Calls to vendor APIs", ["backend", "outcome"], registry=REGISTRY)
VENDOR_LATENCY = Histogram("tjg_vendor_call_seconds", "Vendor API call latency", ["backend"], registry=REGISTRY)
GPUS_ALLOCATED = Gauge("tjg_gpus_allocated", "GPUs held by running jobs, by backend", ["backend"], registry=REGISTRY)
GPUS_IDLE = Gauge("tjg_gpus_idle", "GPUs held by running jobs marked idle, by backend", ["backend"],
                  registry=REGISTRY)
JOBS_BY_PHASE = Gauge("tjg_jobs", "Jobs in the store by backend and phase", ["backend", "phase"], registry=REGISTRY)
WATCH_STREAMS = Gauge("tjg_watch_streams", "Watch streams (SSE) open now", registry=REGISTRY)
BREAKER_OPEN = Gauge("tjg_backend_circuit_open", "1 while a backend's circuit breaker is open", ["backend"],
                     registry=REGISTRY)
