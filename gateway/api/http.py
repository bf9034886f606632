"""What every handler shares: app and request keys, JSON responses, problem+json, request parsing."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from gateway.background.sync import BackendSync
from gateway.core.config import Config
from gateway.core.errors import BadRequest, GatewayError, PayloadTooLarge
from gateway.service.jobs import JobService
from gateway.service.principal import Principal
from gateway.store import Store

SHUTDOWN = web.AppKey("shutdown", asyncio.Event)  # set when the server begins to stop: streams end
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


DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def qtime(request: web.Request, name: str) -> float | None:
    """A time query parameter as epoch seconds: ISO 8601 (`2026-11-24T08:00:00Z`) or an age (`15m`, `2h`, `7d`)."""
    v = request.query.get(name)
    if v is None or v == "":
        return None
    m = DURATION.match(v)
    if m:  # an age beyond the epoch means "from the beginning"
        return max(0.0, time.time() - float(m.group(1)) * SECONDS[m.group(2)])
    try:
        when = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"query parameter {name} must be an ISO 8601 time or an age such as 15m, 2h or 7d",
                         errors=[{"loc": ["query", name], "msg": "expected a time or an age"}]) from None
    return max(0.0, (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())


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
