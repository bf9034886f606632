"""The `/v1` handlers and routes, plus /healthz, /metrics and /openapi.json."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.http import (
    CONFIG,
    PRINCIPAL,
    SERVICE,
    STORE,
    SYNCS,
    only_query,
    qbool,
    qint,
    qtime,
    read_json,
    reply,
    reply_list,
)
from gateway.api.openapi import openapi_document
from gateway.api.watch import watch_all, watch_job
from gateway.core.errors import BadRequest, GatewayError, ValidationError
from gateway.core.metrics import GPUS_ALLOCATED, GPUS_IDLE, JOBS_BY_PHASE
from gateway.core.metrics import REGISTRY as METRICS
from gateway.core.models import Phase
from gateway.core.telemetry import METRICS as METRIC_NAMES
from gateway.core.telemetry import job_gpus
from gateway.service.migrate import migrate
from gateway.service.rows import INFERENCE_VENDOR_KINDS, to_job
from gateway.store import ListFilters

TRAINING_VENDOR_KINDS = ("training", "distributed")


def list_filters(request: web.Request) -> ListFilters:
    """The contract's list filters from the query string."""
    q = request.query
    phases: list[str] = []
    for p in filter(None, (x.strip().upper() for x in q.get("phase", "").split(","))):
        if p not in Phase.__members__:
            raise BadRequest(f"unknown phase {p!r}; known: {', '.join(Phase.__members__)}",
                             errors=[{"loc": ["query", "phase"], "msg": f"unknown phase {p}"}])
        phases.append(p)
    labels = []
    for item in q.getall("label", []):
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise BadRequest("label filters are k=v", errors=[{"loc": ["query", "label"], "msg": "expected k=v"}])
        labels.append((k, v))
    backend = q.get("backend") or None
    known = [b.name for b in request.app[CONFIG].backends]
    if backend is not None and backend not in known:
        raise BadRequest(f"unknown backend {backend!r}; this gateway has {', '.join(known)}",
                         errors=[{"loc": ["query", "backend"], "msg": "not a configured backend"}])
    kind = q.get("kind")
    if kind not in (None, "training", "inference"):
        raise BadRequest("kind must be training or inference", errors=[{"loc": ["query", "kind"],
                                                                         "msg": "training or inference"}])
    vendor_kinds = () if kind is None else INFERENCE_VENDOR_KINDS if kind == "inference" else TRAINING_VENDOR_KINDS
    origin = q.get("origin")
    if origin not in (None, "gateway", "external"):
        raise BadRequest("origin must be gateway or external", errors=[{"loc": ["query", "origin"],
                                                                         "msg": "gateway or external"}])
    id_prefix = q.get("id_prefix")
    if id_prefix is not None and not re.fullmatch(r"[0-9a-z]{1,64}", id_prefix):
        raise BadRequest("id_prefix is the start of a job id (digits and lowercase letters)",
                         errors=[{"loc": ["query", "id_prefix"], "msg": "digits and lowercase letters"}])
    return ListFilters(backend=backend, phases=phases, project=q.get("project") or None, id_prefix=id_prefix,
                       labels=labels, name_prefix=q.get("name_prefix") or None,
                       include_deleted=qbool(request, "deleted"), vendor_kinds=vendor_kinds, origin=origin)


async def submit_job(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    only_query(request, "dry_run", "strict")
    strict = qbool(request, "strict")
    dry = qbool(request, "dry_run")
    raw = await read_json(request)
    if dry:
        return reply(await svc.dry_run(raw, strict))
    res = await svc.submit(request[PRINCIPAL], raw, strict, request.headers.get("Idempotency-Key"))
    headers = {"Location": f"/v1/jobs/{res.job.id}"}
    if res.replayed:
        headers["Idempotent-Replayed"] = "true"
    return reply(res.job, 201, headers)


async def list_jobs(request: web.Request) -> web.Response:
    only_query(request, "backend", "phase", "project", "label", "name_prefix", "id_prefix", "limit", "page_token",
               "deleted", "kind", "origin")
    rows, token = await request.app[SERVICE].list_rows(request[PRINCIPAL], list_filters(request),
                                                       qint(request, "limit", 50, 1, 500),
                                                       request.query.get("page_token") or None)
    return await reply_list("jobs", rows, lambda row: to_job(row).model_dump_json(), {"next_page_token": token})


async def get_job(request: web.Request) -> web.Response:
    only_query(request)
    body = await request.app[SERVICE].get_json(request[PRINCIPAL], request.match_info["id"])
    return web.Response(body=body, content_type="application/json")


async def job_action(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    action = request.match_info["action"]
    only_query(request)
    fn = {"cancel": svc.cancel, "suspend": svc.suspend, "resume": svc.resume}[action]
    return reply(await fn(request[PRINCIPAL], request.match_info["id"]), 202)


async def scale_job(request: web.Request) -> web.Response:
    """POST /v1/jobs/{id}/scale {"replicas": N}: an inference workload's replicas."""
    only_query(request)
    body = await read_json(request)
    replicas = body.get("replicas") if isinstance(body, dict) else None
    extra = sorted(set(body) - {"replicas"}) if isinstance(body, dict) else []
    if extra:
        raise ValidationError(f"unknown field {extra[0]!r}; send {{\"replicas\": N}}",
                              errors=[{"loc": [extra[0]], "msg": "unknown field"}])
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= 1000:
        raise ValidationError("replicas must be an integer from 0 to 1000",
                              errors=[{"loc": ["replicas"], "msg": "integer 0-1000"}])
    return reply(await request.app[SERVICE].scale(request[PRINCIPAL], request.match_info["id"], replicas), 202)


async def delete_job(request: web.Request) -> web.Response:
    only_query(request)
    await request.app[SERVICE].delete(request[PRINCIPAL], request.match_info["id"])
    return web.Response(status=204)


async def job_events(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICE]
    who, job_id = request[PRINCIPAL], request.match_info["id"]
    only_query(request, "watch", "vendor")
    if qbool(request, "watch"):
        return await watch_job(request, svc, who, job_id)
    events = await svc.events(who, job_id)
    body: dict[str, Any] = {}
    if request.query.get("vendor", "true").lower() not in ("false", "0", "no"):
        try:
            events = sorted(events + await svc.vendor_events(who, job_id), key=_event_time)
        except GatewayError as err:  # the history is ours; the vendor's part is best effort
            body["vendor_events_error"] = err.detail
    body["events"] = events
    return reply(body)


def _event_time(e: dict[str, Any]) -> datetime:
    at = e.get("at")
    return at if isinstance(at, datetime) else datetime.min.replace(tzinfo=UTC)


async def job_logs(request: web.Request) -> web.Response:
    only_query(request, "task", "tail")
    tail = qint(request, "tail", 0, 0, 100_000) if "tail" in request.query else None
    return reply(await request.app[SERVICE].logs(request[PRINCIPAL], request.match_info["id"],
                                                 request.query.get("task") or None, tail))


async def migrate_job(request: web.Request) -> web.Response:
    only_query(request, "dry_run")
    dry = qbool(request, "dry_run")
    key = request.headers.get("Idempotency-Key")
    done = await migrate(request.app[SERVICE], request[PRINCIPAL], request.match_info["id"],
                         await read_json(request), dry, key)
    if done.job is None:
        return reply(done.dry_run)
    headers = {"Location": f"/v1/jobs/{done.job.id}"}
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    return reply(done.job, 201, headers)


async def all_events(request: web.Request) -> web.StreamResponse:
    """The caller's jobs' transitions as Server-Sent Events (from now, or after Last-Event-ID)."""
    only_query(request)
    return await watch_all(request, request.app[SERVICE], request[PRINCIPAL])


async def backends(request: web.Request) -> web.Response:
    out = await request.app[SERVICE].backends()
    syncs = request.app[SYNCS]
    for b in out:
        if b["name"] in syncs:
            b["sync"] = syncs[b["name"]].health()
    return reply(out)


async def backend_capacity(request: web.Request) -> web.Response:
    """GET /v1/backends/{name}/capacity: as last read by the backend's sync loop (age_seconds says when)."""
    only_query(request)
    return reply(await request.app[SERVICE].capacity(request.match_info["name"]))


async def job_why(request: web.Request) -> web.Response:
    """GET /v1/jobs/{id}/why: why the job waits or ended, the capacity seen everywhere, what would help."""
    only_query(request)
    return reply(await request.app[SERVICE].why(request[PRINCIPAL], request.match_info["id"]))


async def healthz(request: web.Request) -> web.Response:
    store_ok = True
    try:
        await request.app[STORE].jobs.phase_counts()
    except Exception:
        store_ok = False
    return reply({"status": "ok" if store_ok else "degraded", "store": "ok" if store_ok else "unreachable"},
                 200 if store_ok else 503)


async def job_metrics(request: web.Request) -> web.Response:
    """GET /v1/jobs/{id}/metrics?names=&since=: the job's resource metrics in neutral names."""
    only_query(request, "names", "since")
    names = [n.strip() for n in request.query.get("names", "").split(",") if n.strip()]
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown:
        raise BadRequest(f"unknown metric {unknown[0]!r}; known: {', '.join(METRIC_NAMES)}",
                         errors=[{"loc": ["query", "names"], "msg": f"unknown metric {unknown[0]}"}])
    return reply(await request.app[SERVICE].metrics(request[PRINCIPAL], request.match_info["id"], names or None,
                                                    qtime(request, "since")))


async def usage(request: web.Request) -> web.Response:
    """GET /v1/usage?group_by=&since=&until=: GPU-hours, utilization and cost by group."""
    only_query(request, "group_by", "since", "until")
    return reply(await request.app[SERVICE].usage(request[PRINCIPAL], request.query.get("group_by", "backend"),
                                                  qtime(request, "since"), qtime(request, "until")))


async def metrics(request: web.Request) -> web.Response:
    JOBS_BY_PHASE.clear()
    store = request.app[STORE]
    for backend, phase, n in await store.jobs.phase_counts():
        JOBS_BY_PHASE.labels(backend, phase).set(n)
    allocated: dict[str, float] = {b.name: 0.0 for b in request.app[CONFIG].backends}
    idle = dict(allocated)
    for row in await store.jobs.running():
        gpus = job_gpus(row["spec"] or {}, row["status"])
        allocated[row["backend"]] = allocated.get(row["backend"], 0.0) + gpus
        if (row["status"] or {}).get("idle"):
            idle[row["backend"]] = idle.get(row["backend"], 0.0) + gpus
    for backend, held in allocated.items():
        GPUS_ALLOCATED.labels(backend).set(held)
        GPUS_IDLE.labels(backend).set(idle[backend])
    return web.Response(body=generate_latest(METRICS), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(_: web.Request) -> web.Response:
    return reply(openapi_document())


def add_routes(r: web.UrlDispatcher) -> None:
    """Every route of the `/v1` API and the open endpoints."""
    # aiohttp tries the resources sharing a path prefix in this order: the most frequent request first.
    r.add_get("/v1/jobs/{id}", get_job)
    r.add_delete("/v1/jobs/{id}", delete_job)
    r.add_post("/v1/jobs", submit_job)
    r.add_get("/v1/jobs", list_jobs)
    r.add_post("/v1/jobs/{id}/{action:cancel|suspend|resume}", job_action)
    r.add_get("/v1/jobs/{id}/events", job_events)
    r.add_get("/v1/jobs/{id}/metrics", job_metrics)
    r.add_get("/v1/usage", usage)
    r.add_get("/v1/jobs/{id}/logs", job_logs)
    r.add_post("/v1/jobs/{id}/migrate", migrate_job)
    r.add_post("/v1/jobs/{id}/scale", scale_job)
    r.add_get("/v1/backends", backends)
    r.add_get("/v1/backends/{name}/capacity", backend_capacity)
    r.add_get("/v1/jobs/{id}/why", job_why)
    r.add_get("/v1/events", all_events)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/openapi.json", openapi)
