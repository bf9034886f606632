"""The middleware: request ids and access logs, API keys, the one place errors become problem+json."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import itertools
import random
import time
import uuid

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from multidict import istr

from gateway.api.http import PRINCIPAL, Handler, check_request_text, problem
from gateway.core.config import Config
from gateway.core.errors import Forbidden, GatewayError, PayloadTooLarge, Unauthorized
from gateway.core.logs import REQUEST_ID
from gateway.core.metrics import HTTP
from gateway.service.principal import Principal

log = structlog.get_logger(__name__)

OPEN_PATHS = ("/healthz", "/metrics", "/openapi.json", "/ga4gh/tes/v1/service-info")
GUARDED_PREFIXES = ("/v1/", "/ga4gh/tes/v1/")
_ids = itertools.count()
_PREFIX = uuid.uuid4().hex[:16]
X_REQUEST_ID = istr("X-Request-Id")  # a case-folded key made once, not per lookup
SLOW_SECONDS = 0.5  # always logged, whatever the sample rate


def request_id() -> str:
    """A unique request id: this process's random prefix and a counter (uuid4 per request cost more)."""
    return f"{_PREFIX}{next(_ids):016x}"


def key_digest(key: str) -> bytes:
    """How API keys are looked up: by SHA-256, so the lookup's timing tells nothing about a key's bytes."""
    return hashlib.sha256(key.encode()).digest()


def api_key_of(header: str) -> str | None:
    """The API key an Authorization header carries: `Bearer <key>`, or `Basic` with the key as the password
    and any user name (TES clients and GA4GH's conformance runner put credentials in the URL)."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password.strip() or None if sep else None
    return None


def principals(config: Config) -> dict[bytes, Principal]:
    """Every configured API key's digest and the tenant it stands for."""
    return {key_digest(k.get_secret_value()): Principal(t.name, t.role, tuple(t.projects))
            for t in config.tenants for k in t.api_keys}


# The requests whose work grows with what they carry or list (a page of large jobs, a large spec): a tenant
# runs `server.heavy_requests_per_tenant` of them at once, the rest wait their turn. A POST is heavy only with
# a large body: a small submit's time is the vendor's answer, which must not hold the tenant's next one up.
HEAVY_BODY_BYTES = 64 * 1024
HEAVY = frozenset({("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/ga4gh/tes/v1/tasks"),
                   ("POST", "/ga4gh/tes/v1/tasks"), ("GET", "/v1/usage"), ("POST", "/v1/jobs/{id}/migrate")})


def pipeline(config: Config) -> Middleware:
    """Every request, in one middleware: a request id bound into every log line, the API key, the one
    place errors become problem+json, metrics per route and the access log (errors and slow requests
    always, others sampled at server.access_log_sample)."""
    keys = principals(config)
    # Authorization headers already found valid, straight to their principal: a SHA-256 per request was
    # ~5 µs of a ~60 µs GET under wrk. Only valid headers enter, so this holds at most a few per key; a
    # dict probe is keyed SipHash, so its timing tells no more about a key than the digest lookup did.
    known: dict[str, Principal] = {}
    metrics_need_key = config.metrics_need_key()
    sample = config.server.access_log_sample

    def authenticate(request: web.Request, route: str) -> None:
        """Bearer API keys -> tenant; /healthz and /openapi.json are open, /metrics as `metrics.require_key`
        says (an admin key: it counts every tenant's jobs)."""
        guarded_metrics = route == "/metrics" and metrics_need_key
        target = request.path if route == "unmatched" else route  # a route's template starts as its paths do
        if not guarded_metrics and (target in OPEN_PATHS or not target.startswith(GUARDED_PREFIXES)):
            return
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        who = known.get(header)
        if who is None:
            key = api_key_of(header)
            if not key:
                raise Unauthorized("an API key is required: Authorization: Bearer <key> (or HTTP Basic with the "
                                   "key as the password, as GA4GH TES clients send it)")
            who = keys.get(key_digest(key))
            if who is None:
                raise Unauthorized("unknown API key")
            if len(known) < 1024:
                known[header] = who
        if guarded_metrics and not who.admin:
            raise Forbidden("/metrics needs an admin API key (metrics.require_key)")
        request[PRINCIPAL] = who

    gates: dict[str, asyncio.Semaphore] = {}

    def gate(tenant: str) -> asyncio.Semaphore:
        g = gates.get(tenant)
        if g is None:
            g = gates[tenant] = asyncio.Semaphore(config.server.heavy_requests_per_tenant)
        return g

    @web.middleware
    async def run(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.headers.get(X_REQUEST_ID) or request_id()
        REQUEST_ID.set(rid)  # replaced by the next request: nothing to clear
        started = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            check_request_text(request)
            authenticate(request, route)
            if (request.method, route) in HEAVY and PRINCIPAL in request and (
                    request.method == "GET" or (request.content_length or 0) > HEAVY_BODY_BYTES):
                # One tenant's lists and submits take turns with each other, so that they cannot fill the
                # event loop every other tenant's requests need (see README "Limits").
                async with gate(request[PRINCIPAL].tenant):
                    resp = await handler(request)
            else:
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
            resp.headers[X_REQUEST_ID] = rid
        elapsed = time.perf_counter() - started
        status = resp.status
        HTTP.record(route, request.method, status, elapsed)
        if status >= 400 or elapsed >= SLOW_SECONDS or random.random() < sample:
            log.info("request", method=request.method, path=request.path, status=status,
                     ms=round(elapsed * 1000, 2))
        return resp

    return run
