"""The middleware: request ids and access logs, API keys, the one place errors become problem+json."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import random
import time
import uuid
from typing import Any

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

OPEN_PATHS = ("/healthz", "/metrics", "/openapi.json", "/ga4gh/tes/v1/service-info")


class _Counters:
    """Prometheus children cached per (route, method, status): a labels() lookup per request was a few
    per cent of a GET."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], Any] = {}
        self.latency: dict[tuple[str, str], Any] = {}

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        c = self.requests.get((route, method, status))
        if c is None:
            c = self.requests[(route, method, status)] = HTTP_REQUESTS.labels(route, method, str(status))
        c.inc()
        h = self.latency.get((route, method))
        if h is None:
            h = self.latency[(route, method)] = HTTP_LATENCY.labels(route, method)
        h.observe(seconds)


COUNTERS = _Counters()
_ids = itertools.count()
_PREFIX = uuid.uuid4().hex[:16]
SLOW_SECONDS = 0.5  # always logged, whatever the sample rate


def request_id() -> str:
    """A unique request id: this process's random prefix and a counter (uuid4 per request cost more)."""
    return f"{_PREFIX}{next(_ids):016x}"


@web.middleware
async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request, in one middleware: a request id bound into every log line, the API key, the one
    place errors become problem+json, metrics per route and the access log (errors and slow requests
    always, others sampled at server.access_log_sample)."""
    rid = request.headers.get("X-Request-Id") or request_id()
    # Only request_id is ever bound, and binding replaces it: no clear_contextvars needed per request.
    structlog.contextvars.bind_contextvars(request_id=rid)
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        check_request_text(request)
        authenticate(request)
        resp = await handler(request)
    except GatewayError as err:
        resp = problem(err, rid)
    except web.HTTPRequestEntityTooLarge:
        resp = problem(PayloadTooLarge("request body larger than the limit"), rid)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        http_err = GatewayError(exc.reason or "error")
        http_err.status, http_err.title, http_err.type_slug = exc.status, exc.reason or "Error", "http"
        resp = problem(http_err, rid)
        if exc.status == 405:
            resp.headers["Allow"] = exc.headers.get("Allow", "")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled_error", path=request.path)
        resp = problem(GatewayError("internal error; see the gateway log for this request id"), rid)
    if not resp.prepared:  # a stream has sent its headers already
        resp.headers["X-Request-Id"] = rid
    elapsed = time.perf_counter() - started
    status = resp.status
    COUNTERS.record(route, request.method, status, elapsed)
    if status >= 400 or elapsed >= SLOW_SECONDS or random.random() < request.app[CONFIG].server.access_log_sample:
        log.info("request", method=request.method, path=request.path, status=status, ms=round(elapsed * 1000, 2))
    return resp


def authenticate(request: web.Request) -> None:
    """Bearer API keys -> tenant; /healthz and /openapi.json are open, /metrics as `metrics.require_key` says
    (an admin key: it counts every tenant's jobs)."""
    path = request.path
    guarded_metrics = path == "/metrics" and request.app[CONFIG].metrics_need_key()
    if not guarded_metrics and (path in OPEN_PATHS or not path.startswith(("/v1/", "/ga4gh/tes/v1/"))):
        return
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
