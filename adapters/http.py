"""Vendor HTTP transport: one shared session, timeouts, retries with full jitter and a budget,
concurrency and rate limits, and a circuit breaker per backend."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import quote

import aiohttp
import msgspec
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from yarl import URL

from gateway.core.config import BackendConfig
from gateway.core.errors import (
    AmbiguousCreate,
    BackendAuthError,
    BackendConflict,
    BackendError,
    BackendNotFound,
    BackendRateLimited,
    BackendRejected,
    BackendUnavailable,
)
from gateway.core.metrics import BREAKER_OPEN, VENDOR_CALLS, VENDOR_LATENCY
from gateway.core.retrying import full_jitter, run

log = structlog.get_logger(__name__)

Query = list[tuple[str, str]]
ErrorParser = Callable[[int, Any, dict[str, str]], BackendError]


class Auth(Protocol):
    """How a vendor client authenticates a request."""

    async def headers(self, method: str, path: str, query: Query, body: bytes,
                      base: dict[str, str]) -> dict[str, str]:
        """Headers to send (given the base headers), computed over exactly what is sent."""

    async def unauthorized(self, sent: dict[str, str]) -> bool:
        """After a 401: True when a retry with fresh credentials is worth one more try."""


class NotSent(BackendUnavailable):
    """The request never reached the vendor (connection refused, DNS): safe to retry anything."""


M = TypeVar("M", bound=msgspec.Struct)


@functools.cache
def _decoder(model: type[M]) -> msgspec.json.Decoder[M]:
    # Lenient (strict=False): a number sent as a string still reads; unknown fields are skipped unbuilt.
    return msgspec.json.Decoder(model, strict=False)


@dataclass
class Response:
    """A vendor answer: its bytes, decoded when asked (as plain JSON, or straight into a typed record)."""

    status: int
    raw: bytes
    headers: dict[str, str]
    backend: str = ""

    @functools.cached_property
    def body(self) -> Any:
        """The body as plain JSON (None when empty; {"raw": <the start>} when it is not JSON)."""
        if not self.raw:
            return None
        try:
            return json.loads(self.raw)
        except ValueError:
            return {"raw": self.raw[:500].decode("utf-8", "replace")}

    def decode(self, model: type[M]) -> M:
        """The body decoded into `model` in one step (no intermediate dicts); an answer that does not fit
        is the vendor failing, named with where it did not fit."""
        try:
            # From the bytes: a 470 KB page is not turned into a str first (0.3 ms with the loop held).
            return cast(M, _decoder(model).decode(self.raw or b"{}"))
        except msgspec.DecodeError as err:  # ValidationError is a DecodeError: "... - at `$.workloads[0]`"
            raise BackendUnavailable(f"{self.backend}: unexpected answer ({model.__name__}: {err})",
                                     backend=self.backend) from None


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `reset_seconds` lets one probe through."""

    def __init__(self, backend: str, threshold: int, reset_seconds: float) -> None:
        self.backend = backend
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        """closed | open | half_open."""
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a request go out now?"""
        st = self.state
        if st == "closed":
            return True
        if st == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until a probe may go out."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_seconds - (time.monotonic() - self.opened_at))

    def success(self) -> None:
        if self.opened_at is not None:
            log.info("circuit_closed", backend=self.backend)
            BREAKER_OPEN.labels(self.backend).set(0)
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> None:
        self.failures += 1
        if self.probing or (self.opened_at is None and self.failures >= self.threshold):
            if self.opened_at is None:
                log.warning("circuit_opened", backend=self.backend, consecutive_failures=self.failures)
            self.opened_at = time.monotonic()
            self.probing = False
            BREAKER_OPEN.labels(self.backend).set(1)

    def snapshot(self) -> dict[str, Any]:
        """For GET /v1/backends."""
        return {"state": self.state, "consecutive_failures": self.failures}


class RetryBudget:
    """Retries may add at most `ratio` of the request volume (plus a small reserve)."""

    def __init__(self, ratio: float, reserve: float = 20.0) -> None:
        self.ratio = ratio
        self.cap = reserve
        self.tokens = reserve

    def on_request(self) -> None:
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def take(self) -> bool:
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class RateLimiter:
    """Token bucket; rate 0 means unlimited."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(rate, 1.0)
        self.last = time.monotonic()
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


def encode_query(query: Query) -> str:
    """Percent-encode a query exactly once (`~` kept), so what is signed is what is sent."""
    return "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in query)


class Transport:
    """Sends vendor requests for one backend through the shared session."""

    def __init__(self, config: BackendConfig, session: aiohttp.ClientSession, auth: Auth,
                 error_parser: ErrorParser) -> None:
        self.config = config
        self.session = session
        self.auth = auth
        self.parse_error = error_parser
        self.breaker = CircuitBreaker(config.name, config.breaker_threshold, config.breaker_reset_seconds)
        self.budget = RetryBudget(config.retry.budget_ratio)
        self.limiter = RateLimiter(config.rate_limit)
        self.slots = asyncio.Semaphore(config.max_concurrency)
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout,
                                             sock_read=config.read_timeout)

    async def request(self, method: str, path: str, *, query: Query | None = None, body: Any = None,
                      idempotent: bool = True, attempts: int | None = None) -> Response:
        """Send with retries: idempotent calls retry on 429, 5xx and network errors; others only
        when the vendor certainly did not apply them (429, not sent). Ambiguous outcomes raise
        AmbiguousCreate for the caller to resolve. Retries wait with full jitter (never less than a
        Retry-After) and are bounded by the attempts and by the backend's retry budget."""
        query = query or []
        raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        most = attempts or self.config.retry.attempts
        self.budget.on_request()

        def retryable(err: BaseException) -> bool:
            if isinstance(err, NotSent | BackendRateLimited):
                return True  # certainly not applied
            if isinstance(err, AmbiguousCreate) or not isinstance(err, BackendUnavailable):
                return False
            return idempotent and not (err.vendor_status is None and "circuit" in err.detail)

        def spent(state: RetryCallState) -> bool:
            return state.attempt_number >= most or not self.budget.take()

        def give_up(state: RetryCallState) -> Response:
            raise BackendUnavailable(f"{self.config.name}: gave up after {state.attempt_number} attempts",
                                     backend=self.config.name)

        r = self.config.retry
        retrying = AsyncRetrying(retry=retry_if_exception(retryable), stop=spent,
                                 wait=full_jitter(r.base_delay, r.max_delay), retry_error_callback=give_up)
        resp: Response = await run(retrying, self._send_authed, method, path, query, raw, idempotent)
        return resp

    async def _send_authed(self, method: str, path: str, query: Query, raw: bytes, idempotent: bool) -> Response:
        headers: dict[str, str] = {}
        for tries in range(2):
            base = {"Content-Type": "application/json", "Accept": "application/json"}
            headers = await self.auth.headers(method, path, query, raw, base)
            resp = await self._send(method, path, query, raw, headers, idempotent)
            if resp.status == 401 and tries == 0 and await self.auth.unauthorized(headers):
                continue
            return self._check(resp)
        raise AssertionError("unreachable")

    def _check(self, resp: Response) -> Response:
        if resp.status < 400:
            return resp
        err = self.parse_error(resp.status, resp.body, resp.headers)
        raise err

    async def _send(self, method: str, path: str, query: Query, raw: bytes, headers: dict[str, str],
                    idempotent: bool) -> Response:
        name = self.config.name
        if not self.breaker.allow():
            VENDOR_CALLS.labels(name, "circuit_open").inc()
            raise BackendUnavailable(f"{name}: circuit open after repeated failures; retry in "
                                     f"{self.breaker.retry_in():.1f}s", backend=name,
                                     retry_after=self.breaker.retry_in())
        await self.limiter.acquire()
        qs = encode_query(query)
        url = URL(self.config.url + path + (f"?{qs}" if qs else ""), encoded=True)
        started = time.monotonic()
        async with self.slots:
            try:
                async with self.session.request(method, url, data=raw or None, headers=headers,
                                                timeout=self.timeout) as r:
                    raw_body = await r.read()
                    resp_headers = {k: v for k, v in r.headers.items()}
                    status = r.status
            except aiohttp.ClientConnectorError as err:
                self.breaker.failure()
                VENDOR_CALLS.labels(name, "not_sent").inc()
                raise NotSent(f"{name}: cannot connect ({err.os_error.strerror or 'refused'})",
                              backend=name) from err
            except (TimeoutError, aiohttp.ClientError) as err:
                self.breaker.failure()
                kind = type(err).__name__
                VENDOR_CALLS.labels(name, "network").inc()
                log.warning("vendor_call_failed", backend=name, method=method, path=path, error=kind)
                if not idempotent:
                    raise AmbiguousCreate(f"{name}: {kind} after the request was sent; outcome unknown",
                                          backend=name) from err
                raise BackendUnavailable(f"{name}: {kind}", backend=name) from err
            finally:
                VENDOR_LATENCY.labels(name).observe(time.monotonic() - started)
        resp = Response(status, raw_body, resp_headers, name)
        if status >= 500:
            self.breaker.failure()
            VENDOR_CALLS.labels(name, "server_error").inc()
            log.warning("vendor_call_failed", backend=name, method=method, path=path, status=status)
            if not idempotent:
                parsed = self.parse_error(status, resp.body, resp_headers)
                raise AmbiguousCreate(f"{name}: HTTP {status} after the request was sent; outcome unknown",
                                      backend=name, vendor_status=status, vendor_code=parsed.vendor_code,
                                      vendor_message=parsed.vendor_message)
        else:
            self.breaker.success()
            outcome = "ok" if status < 400 else ("rate_limited" if status == 429 else "client_error")
            VENDOR_CALLS.labels(name, outcome).inc()
        return resp


def seg(value: str) -> str:
    """One path segment for a vendor URL, with everything but unreserved characters escaped: an id or a
    task name can never reach another path, a query string or a header."""
    return quote(str(value), safe="")


def retry_after_of(headers: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds only)."""
    value = headers.get("Retry-After") if headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify(status: int, backend: str, code: str | None, message: str | None, headers: Any,
             not_found: bool = False, conflict: bool = False) -> BackendError:
    """Map a vendor error to the gateway's error tree, keeping the vendor's code and message."""
    detail = f"{backend}: {message or 'HTTP ' + str(status)}" + (f" ({code})" if code else "")
    kw: dict[str, Any] = {"backend": backend, "vendor_status": status, "vendor_code": code,
                          "vendor_message": message}
    if status == 429:
        return BackendRateLimited(detail, retry_after=retry_after_of(headers), **kw)
    if status >= 500:
        return BackendUnavailable(detail, **kw)
    if status in (401, 403):
        return BackendAuthError(detail, **kw)
    if not_found or status == 404:
        return BackendNotFound(detail, **kw)
    if conflict or status == 409:
        return BackendConflict(detail, **kw)
    return BackendRejected(detail, **kw)
