"""The OpenAPI 3.1 document, generated from the pydantic models the handlers really use."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from gateway import __version__
from gateway.core.capacity import Capacity
from gateway.core.models import DryRun, Job, JobSpec, Phase, Reason
from gateway.service.migrate import MigrateRequest


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(None, description="Validation errors: [{loc, msg}].")


class JobList(BaseModel):
    """A page of jobs."""

    jobs: list[Job]
    next_page_token: str | None = None


class Transition(BaseModel):
    """A phase transition (kind=transition), another vendor-side change of the status (kind=change: the
    message lists each field, old -> new), an activity mark on a running job (idle, active) or a vendor
    event (kind=vendor), by time."""

    kind: Literal["transition", "change", "idle", "active", "vendor"]
    seq: int | None = None
    from_phase: Phase | None = None
    to_phase: Phase | None = None
    vendor_phase: str | None = None
    type: str | None = None
    reason: str | None = None
    message: str | None = None
    source: str
    at: str | None


class EventList(BaseModel):
    """A job's transitions merged with the vendor's events, oldest first."""

    events: list[Transition]
    vendor_events_error: str | None = None


class LogPreview(BaseModel):
    """A preview of a job's log."""

    job_id: str
    task: str
    content: str
    full_size: int


class MetricSeries(BaseModel):
    """One metric over time."""

    name: str = Field(..., description="gpu_utilization, gpu_memory_used, gpu_memory_utilization, "
                      "cpu_utilization or memory_used.")
    unit: Literal["percent", "bytes"]
    points: list[tuple[datetime, float]] = Field(..., description="[time, value] pairs, oldest first.")


class MetricNote(BaseModel):
    """How the backend gave one metric, or why it could not (a metric is never invented)."""

    name: str
    outcome: Literal["exact", "derived", "unavailable"]
    detail: str


class JobMetricsOut(BaseModel):
    """A job's resource metrics in neutral names."""

    job_id: str
    backend: str
    series: list[MetricSeries]
    report: list[MetricNote]


class UsageFigures(BaseModel):
    """GPU-hours, utilization and cost of a group of jobs."""

    jobs: int = Field(..., description="Jobs that ran in the period.")
    gpu_hours: float = Field(..., description="GPUs x nodes x hours in RUNNING.")
    running_hours: float
    avg_gpu_utilization: float | None = Field(None, description="Weighted by GPU-hours over jobs whose "
                                              "utilization is known.")
    cost: float = Field(..., description="Priced GPU-hours x mappings/prices.yaml.")
    unpriced_gpu_hours: float


class UsageGroup(UsageFigures):
    """One group's figures."""

    key: str


class UsageOut(BaseModel):
    """GET /v1/usage."""

    group_by: str
    since: datetime | None
    until: datetime
    currency: str
    groups: list[UsageGroup]
    total: UsageFigures


class MigrateDryRun(BaseModel):
    """What a migration would send, and how each field fares on both vendors."""

    backend: str
    request: dict[str, Any]
    report: list[dict[str, Any]]
    source: dict[str, Any]
    comparison: list[dict[str, Any]]


class CapacitySeen(BaseModel):
    """A backend's capacity for the job's GPU type, as last read."""

    backend: str
    gpu_type: str | None
    free_gpus: float | None = Field(None, description="The most GPUs free in one pool that fits the job.")
    total_gpus: float | None
    pools: list[str]
    queued_jobs: int | None = Field(None, description="This gateway's jobs QUEUED there.")
    age_seconds: float | None = Field(None, description="Seconds since the figures were read; null: never.")
    error: str | None = None


class Why(BaseModel):
    """GET /v1/jobs/{id}/why: why the job waits or ended, and what would help."""

    job_id: str
    name: str
    backend: str
    phase: Phase
    terminal: bool
    reason: Reason | None
    reason_message: str | None
    vendor_phase: str | None
    message: str | None
    exit_code: int | None
    since: str | None = Field(None, description="While QUEUED: since when it waits (the vendor's time).")
    waiting_seconds: float | None = None
    summary: str
    asks: dict[str, Any] = Field(..., description="gpus, gpus_per_node, nodes, gpu_type, priority, preemptible.")
    capacity: list[CapacitySeen]
    suggestions: list[str]


class Backend(BaseModel):
    """A configured backend."""

    name: str
    kind: str
    url: str
    simulated: bool
    capabilities: dict[str, Any]
    healthy: bool
    circuit: str


def _problem_responses(*codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in codes:
        out[str(c)] = {"description": "Problem", "content": {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}}}
    return out


def _json(ref: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{ref}"}}}}


# OpenAPI links: what a client (and schemathesis' stateful tests) can do next with a new job.
JOB_LINKS = {name: {"operationId": op, "parameters": {"id": "$response.body#/id"}}
             for name, op in (("GetJob", "getJob"), ("CancelJob", "cancelJob"), ("SuspendJob", "suspendJob"),
                              ("ResumeJob", "resumeJob"), ("JobEvents", "jobEvents"), ("JobLogs", "jobLogs"),
                              ("JobMetrics", "jobMetrics"),
                              ("DeleteJob", "deleteJob"), ("MigrateJob", "migrateJob"))}
# One Server-Sent Event as a client reads it: its event name, its JSON data (as text) and its id.
SSE_EVENT = {"type": "object", "properties": {"event": {"type": "string"}, "data": {"type": "string"},
                                              "id": {"type": "string"}, "retry": {"type": "integer"}}}
JOB_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}


@cache
def openapi_document() -> dict[str, Any]:
    """The document served at /openapi.json."""
    _, schemas = models_json_schema(
        [(m, "serialization") for m in (Job, DryRun, JobList, EventList, Backend, Problem, LogPreview,
                                        MigrateDryRun, JobMetricsOut, UsageOut, Why, Capacity)]
        + [(JobSpec, "validation"), (MigrateRequest, "validation")], ref_template="#/components/schemas/{model}")
    components = schemas.get("$defs", {})
    auth = _problem_responses(401)
    paths: dict[str, Any] = {
        "/v1/jobs": {
            "post": {
                "summary": "Submit a job", "operationId": "submitJob",
                "parameters": [
                    {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "strict", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "Idempotency-Key", "in": "header",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
                ],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/JobSpec"}}}},
                "responses": {"201": {**_json("Job", "Created (or replayed)"), "links": JOB_LINKS},
                              "200": _json("DryRun", "Dry run"),
                              **_problem_responses(400, 409, 413, 422, 502, 503), **auth},
            },
            "get": {
                "summary": "List jobs across backends", "operationId": "listJobs",
                "parameters": [
                    {"name": "backend", "in": "query", "schema": {"type": "string"}},
                    {"name": "phase", "in": "query", "schema": {"type": "string"},
                     "description": "Comma list of phases"},
                    {"name": "project", "in": "query", "schema": {"type": "string"}},
                    {"name": "label", "in": "query", "schema": {"type": "array", "items": {"type": "string"}},
                     "style": "form", "explode": True, "description": "k=v, repeatable"},
                    {"name": "name_prefix", "in": "query", "schema": {"type": "string"}},
                    {"name": "id_prefix", "in": "query", "description": "The start of a job id.",
                     "schema": {"type": "string", "pattern": "^[0-9a-z]{1,64}$"}},
                    {"name": "kind", "in": "query", "schema": {"type": "string", "enum": ["training", "inference"]}},
                    {"name": "origin", "in": "query", "schema": {"type": "string", "enum": ["gateway", "external"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {"name": "page_token", "in": "query", "schema": {"type": "string"}},
                    {"name": "deleted", "in": "query", "schema": {"type": "boolean"},
                     "description": "Include jobs removed with DELETE"},
                ],
                "responses": {"200": _json("JobList"), **_problem_responses(400), **auth},
            },
        },
        "/v1/jobs/{id}": {
            "get": {"summary": "Get a job", "operationId": "getJob", "parameters": [JOB_ID],
                    "responses": {"200": _json("Job"), **_problem_responses(400, 404), **auth}},
            "delete": {"summary": "Delete a job from its backend (the record stays)", "operationId": "deleteJob",
                       "parameters": [JOB_ID],
                       "responses": {"204": {"description": "Deleted"},
                                     **_problem_responses(400, 404, 502, 503), **auth}},
        },
        "/v1/jobs/{id}/events": {
            "get": {"summary": "A job's history: transitions and changes (watch=true: Server-Sent Events until it ends)",
                    "operationId": "jobEvents",
                    "parameters": [JOB_ID, {"name": "watch", "in": "query", "schema": {"type": "boolean"}},
                                   {"name": "vendor", "in": "query", "schema": {"type": "boolean"},
                                    "description": "Merge in the vendor's events (default true)"}],
                    "responses": {"200": {"description": "OK", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/EventList"}},
                        "text/event-stream": {"schema": SSE_EVENT}}},
                        **_problem_responses(400, 404), **auth}},
        },
        "/v1/jobs/{id}/logs": {
            "get": {"summary": "A preview of the job's log (409 where the backend has no logs)",
                    "operationId": "jobLogs",
                    "parameters": [JOB_ID, {"name": "task", "in": "query", "schema": {"type": "string"}},
                                   {"name": "tail", "in": "query",
                                    "schema": {"type": "integer", "minimum": 0, "maximum": 100000}}],
                    "responses": {"200": _json("LogPreview"), **_problem_responses(400, 404, 409, 502, 503),
                                  **auth}},
        },
        "/v1/jobs/{id}/metrics": {
            "get": {"summary": "The job's resource metrics from its backend (409 where the backend has none)",
                    "operationId": "jobMetrics",
                    "parameters": [JOB_ID, {"name": "names", "in": "query", "schema": {"type": "string"},
                                            "description": "Comma list of metric names (default: all four)"},
                                   {"name": "since", "in": "query", "schema": {"type": "string"},
                                    "description": "ISO 8601 time or an age such as 15m"}],
                    "responses": {"200": _json("JobMetricsOut"), **_problem_responses(400, 404, 409, 502, 503),
                                  **auth}},
        },
        "/v1/jobs/{id}/scale": {
            "post": {"summary": "Set an inference workload's replicas (409 where the backend cannot)",
                     "operationId": "scaleJob", "parameters": [JOB_ID],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["replicas"], "additionalProperties": False,
                         "properties": {"replicas": {"type": "integer", "minimum": 0, "maximum": 1000}}}}}},
                     "responses": {"202": _json("Job", "Accepted"),
                                   **_problem_responses(400, 404, 409, 413, 415, 422, 502, 503), **auth}},
        },
        "/v1/usage": {
            "get": {"summary": "GPU-hours, utilization and cost by backend, tenant, project or label",
                    "operationId": "usage",
                    "parameters": [{"name": "group_by", "in": "query", "schema": {"type": "string"},
                                    "description": "backend (default), tenant, project or label:<key>"},
                                   {"name": "since", "in": "query", "schema": {"type": "string"}},
                                   {"name": "until", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": _json("UsageOut"), **_problem_responses(400), **auth}},
        },
        "/v1/jobs/{id}/migrate": {
            "post": {"summary": "Move a job to another backend", "operationId": "migrateJob",
                     "parameters": [JOB_ID, {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}}],
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/MigrateRequest"}}}},
                     "responses": {"201": _json("Job", "The new job"), "200": _json("MigrateDryRun", "Dry run"),
                                   **_problem_responses(400, 404, 409, 413, 422, 502, 503), **auth}},
        },
        "/v1/backends": {
            "get": {"summary": "Configured backends", "operationId": "listBackends",
                    "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                        "type": "array", "items": {"$ref": "#/components/schemas/Backend"}}}}}, **auth}},
        },
        "/v1/backends/{name}/capacity": {
            "get": {"summary": "Free and total GPUs by pool and type, the queue and quotas, as last read (with "
                               "their age)", "operationId": "backendCapacity",
                    "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": _json("Capacity"), **_problem_responses(400, 404, 409), **auth}},
        },
        "/v1/jobs/{id}/why": {
            "get": {"summary": "Why the job waits or ended, the capacity seen on every backend, what would help",
                    "operationId": "jobWhy", "parameters": [JOB_ID],
                    "responses": {"200": _json("Why"), **_problem_responses(400, 404), **auth}},
        },
        "/v1/events": {
            "get": {"summary": "Server-Sent Events: transitions of the caller's jobs from now on",
                    "operationId": "watchEvents",
                    "responses": {"200": {"description": "text/event-stream", "content": {
                        "text/event-stream": {"schema": SSE_EVENT}}}, **auth}},
        },
        "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz", "security": [],
                             "responses": {"200": {"description": "OK", "content": {"application/json": {
                                 "schema": {"type": "object"}}}}}}},
    }
    for action in ("cancel", "suspend", "resume"):
        paths[f"/v1/jobs/{{id}}/{action}"] = {"post": {
            "summary": f"{action.capitalize()} a job", "operationId": f"{action}Job", "parameters": [JOB_ID],
            "responses": {"202": _json("Job", "Accepted"), **_problem_responses(400, 404, 409, 502, 503),
                          **auth}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "trainjob-gateway", "version": __version__,
                 "description": "One API for training jobs on NVIDIA Run:ai and Huawei ModelArts."},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
