"""Prometheus metrics of the gateway, registered once per process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter("tjg_http_requests_total", "Gateway HTTP requests", ["route", "method", "status"],
                        registry=REGISTRY)
HTTP_LATENCY = Histogram("tjg_http_request_seconds", "Gateway HTTP request latency", ["route", "method"],
                         registry=REGISTRY,
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
VENDOR_CALLS = Counter("tjg_vendor_calls_total", "Calls to vendor APIs", ["backend", "outcome"], registry=REGISTRY)
VENDOR_LATENCY = Histogram("tjg_vendor_call_seconds", "Vendor API call latency", ["backend"], registry=REGISTRY)
GPUS_ALLOCATED = Gauge("tjg_gpus_allocated", "GPUs held by running jobs, by backend", ["backend"], registry=REGISTRY)
GPUS_IDLE = Gauge("tjg_gpus_idle", "GPUs held by running jobs marked idle, by backend", ["backend"],
                  registry=REGISTRY)
JOBS_BY_PHASE = Gauge("tjg_jobs", "Jobs in the store by backend and phase", ["backend", "phase"], registry=REGISTRY)
BREAKER_OPEN = Gauge("tjg_backend_circuit_open", "1 while a backend's circuit breaker is open", ["backend"],
                     registry=REGISTRY)
