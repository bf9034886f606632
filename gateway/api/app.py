"""The HTTP service: create_app(config) builds the whole gateway."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

import adapters  # noqa: F401  (registers the adapters)
from adapters.simkit import start_simulator
from gateway.api.openapi import openapi_document
from gateway.background.replicas import leased, replica_id
from gateway.background.sync import BackendSync
from gateway.background.webhooks import WebhookDeliverer, targets
from gateway.core.adapter import REGISTRY, Adapter
from gateway.core.config import Config
from gateway.core.errors import BadRequest, GatewayError, PayloadTooLarge, Unauthorized
from gateway.core.logs import register_secrets
from gateway.core.metrics import HTTP_LATENCY, HTTP_REQUESTS, JOBS_BY_PHASE
from gateway.core.metrics import REGISTRY as METRICS
from gateway.core.models import Phase
from gateway.service.jobs import JobService, Principal
from gateway.store.jobs import ListFilters, Store

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
SERVICE = web.AppKey("service", JobService)
SYNCS = web.AppKey("syncs", dict[str, BackendSync])
PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)
KEYS = web.AppKey("keys", list[tuple[bytes, Principal]])
OPEN_PATHS = ("/healthz", "/metrics", "/openapi.json")


def dumps(data: Any) -> str:
    """JSON for responses (pydantic models, datetimes)."""
    if isinstance(data, BaseModel):
        return data.model_dump_json()
    return json.dumps(data, default=_default, separators=(",", ":"))


def _default(o: Any) -> Any:
    if isinstance(o, BaseModel):
        return o.model_dump(mode="json")
    if hasattr(o, "isoformat"):
        return o.isoformat()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response."""
    return web.Response(text=dumps(data), status=status, content_type="application/json", headers=headers)


def problem(err: GatewayError, request_id: str | None = None) -> web.Response:
    """An application/problem+json response."""
    body = err.problem()
    if request_id:
        body["request_id"] = request_id
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return web.Response(text=json.dumps(body, default=str), status=err.status,
                        content_type="application/problem+json", headers=headers)


# -- middlewares ----------------------------------------------------------------------------
@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id bound into every log line, one access log line, metrics per route."""
    rid = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        resp.headers["X-Request-Id"] = rid
        return resp
    finally:
        elapsed = time.perf_counter() - started
        HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        HTTP_LATENCY.labels(route, request.method).observe(elapsed)
        log.info("request", method=request.method, path=request.path, status=status,
                 ms=round(elapsed * 1000, 2))


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place errors become problem+json."""
    rid = request.get(REQUEST_ID)
    try:
        return await handler(request)
    except GatewayError as err:
        return problem(err, rid)
    except web.HTTPRequestEntityTooLarge:
        return problem(PayloadTooLarge("request body larger than the limit"), rid)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        http_err = GatewayError(exc.reason or "error")
        http_err.status, http_err.title, http_err.type_slug = exc.status, exc.reason or "Error", "http"
        resp = problem(http_err, rid)
        if exc.status == 405:
            resp.headers["Allow"] = exc.headers.get("Allow", "")
        return resp
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled_error", path=request.path)
        return problem(GatewayError("internal error; see the gateway log for this request id"), rid)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer API keys -> tenant; /healthz, /metrics and /openapi.json are open."""
    if request.path in OPEN_PATHS or not request.path.startswith("/v1/"):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise Unauthorized("an API key is required: Authorization: Bearer <key>")
    presented = header[7:].strip().encode()
    who = None
    for key, principal in request.app[KEYS]:
        if hmac.compare_digest(key, presented):  # compare with every key: no early exit
            who = principal
    if who is None:
        raise Unauthorized("unknown API key")
    request[PRINCIPAL] = who
    return await handler(request)


# -- helpers --------------------------------------------------------------------------------
async def read_json(request: web.Request) -> Any:
    """The request body as JSON; 413 over the limit, 400 when malformed."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as err:
        raise PayloadTooLarge(f"request body larger than {request.app[CONFIG].server.max_body_bytes} bytes") \
            from err
    if not raw:
        raise BadRequest("the request body is empty; send a JSON job spec")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"malformed JSON: {err}",
                         errors=[{"loc": ["body"], "msg": "malformed JSON"}]) from err


def only_query(request: web.Request, *allowed: str) -> None:
    """Refuse query parameters the endpoint does not know (a typo must not be silently ignored)."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}"
                         + (f"; this endpoint takes {', '.join(allowed)}" if allowed else ""),
                         errors=[{"loc": ["query", u], "msg": "unknown parameter"} for u in unknown])


def qbool(request: web.Request, name: str) -> bool:
    """A boolean query parameter."""
    v = request.query.get(name)
    if v is None:
        return False
    if v.lower() in ("true", "1", "yes", ""):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise BadRequest(f"query parameter {name} must be true or false",
                     errors=[{"loc": ["query", name], "msg": "expected true or false"}])


def qint(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter within bounds."""
    v = request.query.get(name)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        n = lo - 1
    if not lo <= n <= hi:
        raise BadRequest(f"query parameter {name} must be an integer from {lo} to {hi}",
                         errors=[{"loc": ["query", name], "msg": f"integer {lo}-{hi}"}])
    return n


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
    return ListFilters(backend=q.get("backend") or None, phases=phases, project=q.get("project") or None,
                       labels=labels, name_prefix=q.get("name_prefix") or None,
                       include_deleted=qbool(request, "deleted"))


# -- handlers -------------------------------------------------------------------------------
async def submit_job(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    only_query(request, "dry_run", "strict")
    strict = qbool(request, "strict")
    dry = qbool(request, "dry_run")
    raw = await read_json(request)
    if dry:
        return reply(svc.dry_run(raw, strict))
    res = await svc.submit(request[PRINCIPAL], raw, strict, request.headers.get("Idempotency-Key"))
    headers = {"Location": f"/v1/jobs/{res.job.id}"}
    if res.replayed:
        headers["Idempotent-Replayed"] = "true"
    return reply(res.job, 201, headers)


async def list_jobs(request: web.Request) -> web.Response:
    only_query(request, "backend", "phase", "project", "label", "name_prefix", "limit", "page_token", "deleted")
    jobs, token = await request.app[SERVICE].list_jobs(request[PRINCIPAL], list_filters(request),
                                                  qint(request, "limit", 50, 1, 500),
                                                  request.query.get("page_token") or None)
    return reply({"jobs": jobs, "next_page_token": token})


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


async def delete_job(request: web.Request) -> web.Response:
    only_query(request)
    await request.app[SERVICE].delete(request[PRINCIPAL], request.match_info["id"])
    return web.Response(status=204)


async def job_events(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICE]
    who, job_id = request[PRINCIPAL], request.match_info["id"]
    only_query(request, "watch", "vendor")
    if qbool(request, "watch"):
        from gateway.api.watch import watch_job

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
    tail = qint(request, "tail", 0, 0, 100_000) or None
    return reply(await request.app[SERVICE].logs(request[PRINCIPAL], request.match_info["id"],
                                                 request.query.get("task") or None, tail))


async def migrate_job(request: web.Request) -> web.Response:
    from gateway.service.migrate import migrate

    only_query(request, "dry_run")
    dry = qbool(request, "dry_run")
    result, created = await migrate(request.app[SERVICE], request[PRINCIPAL], request.match_info["id"],
                                    await read_json(request), dry)
    if not created:
        return reply(result)
    return reply(result, 201, {"Location": f"/v1/jobs/{result.id}"})


async def all_events(request: web.Request) -> web.StreamResponse:
    """The caller's jobs' transitions as Server-Sent Events (from now, or after Last-Event-ID)."""
    from gateway.api.watch import watch_all

    only_query(request)
    return await watch_all(request, request.app[SERVICE], request[PRINCIPAL])


async def backends(request: web.Request) -> web.Response:
    out = await request.app[SERVICE].backends()
    syncs = request.app[SYNCS]
    for b in out:
        if b["name"] in syncs:
            b["sync"] = syncs[b["name"]].health()
    return reply(out)


async def healthz(request: web.Request) -> web.Response:
    store_ok = True
    try:
        await request.app[STORE].phase_counts()
    except Exception:
        store_ok = False
    return reply({"status": "ok" if store_ok else "degraded", "store": "ok" if store_ok else "unreachable"},
                 200 if store_ok else 503)


async def metrics(request: web.Request) -> web.Response:
    JOBS_BY_PHASE.clear()
    for backend, phase, n in await request.app[STORE].phase_counts():
        JOBS_BY_PHASE.labels(backend, phase).set(n)
    return web.Response(body=generate_latest(METRICS), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(_: web.Request) -> web.Response:
    return reply(openapi_document())


# -- lifecycle ------------------------------------------------------------------------------
def _simulators(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(_: web.Application) -> AsyncIterator[None]:
        from urllib.parse import urlsplit

        runners = []
        for b in config.backends:
            if not b.simulate:
                continue
            u = urlsplit(b.url)
            c = b.credentials
            if b.kind == "runai":
                creds = [(c.client_id, c.client_secret.get_secret_value())] if c.client_id and c.client_secret \
                    else None
            else:
                creds = [(c.ak, c.sk.get_secret_value())] if c.ak and c.sk else None
            runners.append(await start_simulator(b.kind, u.hostname or "127.0.0.1", u.port or 80,
                                                 credentials=creds, faults=b.simulate_faults,
                                                 speed=b.simulate_speed))
            log.info("simulator_started", backend=b.name, kind=b.kind, url=b.url)
        yield
        for r in runners:
            await r.cleanup()
    return ctx


def _core(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
        session = aiohttp.ClientSession(connector=connector)
        store = Store(config.store.url, webhook_targets=targets(config))
        await store.migrate()
        owner = replica_id()
        ttl = config.replica.lease_seconds
        adapters_: dict[str, Adapter] = {b.name: REGISTRY.create(b, session) for b in config.backends}
        service = JobService(config, store, adapters_)
        app[STORE] = store
        app[SERVICE] = service
        syncs = {name: BackendSync(a, store, flush=service.flush_completions) for name, a in adapters_.items()}
        app[SYNCS] = syncs
        await service.recover()
        service.on_submitted = {n: s.wake for n, s in syncs.items()}
        tasks = [asyncio.create_task(leased(store, f"sync:{n}", owner, ttl, s.step, s.wake), name=f"sync-{n}")
                 for n, s in syncs.items()]
        tasks.append(asyncio.create_task(leased(store, "reconcile", owner, ttl, reconcile_step(service, config)),
                                         name="reconcile"))
        tasks.append(asyncio.create_task(WebhookDeliverer(store, config, session, owner).run(), name="webhooks"))
        if store.is_sqlite:
            tasks.append(asyncio.create_task(store.checkpoint_loop(), name="sqlite-checkpoint"))
        yield
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await service.close()
        await session.close()
        await store.close()
    return ctx


def reconcile_step(service: JobService, config: Config) -> Callable[[], Awaitable[float]]:
    """Settle submissions left pending by a replica that died (older than replica.reconcile_after)."""
    async def step() -> float:
        for row in await service.store.pending(older_than=config.replica.reconcile_after):
            try:
                await service.resolve_pending(row["id"])
            except Exception as err:
                log.warning("reconcile_failed", job_id=row["id"], error=str(err))
        return 5.0
    return step


def create_app(config: Config) -> web.Application:
    """The gateway as an aiohttp application."""
    register_secrets(config.secrets())
    app = web.Application(middlewares=[observe, errors, authenticate],
                          client_max_size=config.server.max_body_bytes)
    app[CONFIG] = config
    keys: list[tuple[bytes, Principal]] = []
    for t in config.tenants:
        p = Principal(t.name, t.role, tuple(t.projects))
        keys.extend((k.get_secret_value().encode(), p) for k in t.api_keys)
    app[KEYS] = keys
    app.cleanup_ctx.append(_simulators(config))
    app.cleanup_ctx.append(_core(config))
    r = app.router
    r.add_post("/v1/jobs", submit_job)
    r.add_get("/v1/jobs", list_jobs)
    r.add_get("/v1/jobs/{id}", get_job)
    r.add_delete("/v1/jobs/{id}", delete_job)
    r.add_post("/v1/jobs/{id}/{action:cancel|suspend|resume}", job_action)
    r.add_get("/v1/jobs/{id}/events", job_events)
    r.add_get("/v1/jobs/{id}/logs", job_logs)
    r.add_post("/v1/jobs/{id}/migrate", migrate_job)
    r.add_get("/v1/backends", backends)
    r.add_get("/v1/events", all_events)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/openapi.json", openapi)
    return app
