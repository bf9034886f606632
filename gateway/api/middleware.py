"""The middlewares: request ids and access logs, the one place errors become problem+json, API keys."""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid

import structlog
from aiohttp import web

from gateway.api.http import (
    CONFIG,
    KEYS,
    PRINCIPAL,
    REQUEST_ID,
    Handler,
    check_request_text,
    problem,
)
from gateway.core.errors import Forbidden, GatewayError, PayloadTooLarge, Unauthorized
from gateway.core.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = structlog.get_logger(__name__)

# Every answer: nothing but the gateway's own origin may be loaded (the dashboard needs nothing else).
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; "
                                               "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff"}
OPEN_PATHS = ("/healthz", "/metrics", "/openapi.json", "/ga4gh/tes/v1/service-info")


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
        if not resp.prepared:  # a stream has sent its headers already
            resp.headers["X-Request-Id"] = rid
            resp.headers.update(SECURITY_HEADERS)
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
        check_request_text(request)
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
    """Bearer API keys -> tenant; /healthz and /openapi.json are open, /metrics as `metrics.require_key` says
    (an admin key: it counts every tenant's jobs)."""
    guarded_metrics = request.path == "/metrics" and request.app[CONFIG].metrics_need_key()
    api = request.path.startswith(("/v1/", "/ga4gh/tes/v1/"))
    if not guarded_metrics and (request.path in OPEN_PATHS or not api):
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
    if guarded_metrics and not who.admin:
        raise Forbidden("/metrics needs an admin API key (metrics.require_key)")
    request[PRINCIPAL] = who
    return await handler(request)
