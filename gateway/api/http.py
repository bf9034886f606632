"""What every handler shares: app and request keys, JSON responses, problem+json, request parsing."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from gateway.background.sync import BackendSync
from gateway.core.config import Config
from gateway.core.errors import (
    BadRequest,
    GatewayError,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationError,
)
from gateway.core.slices import Slices
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


async def reply_list(key: str, items: Iterable[Any], encode: Callable[[Any], str],
                     more: dict[str, Any] | None = None) -> web.Response:
    """A JSON object whose `key` is a list, encoded item by item with the loop free in between (a page of
    large jobs took tens of milliseconds to encode in one go, while every other request waited)."""
    slices = Slices()
    parts: list[str] = []
    for item in items:
        parts.append(encode(item))
        await slices.turn()
    tail = dumps(more)[1:-1] if more else ""
    return web.Response(text=f'{{"{key}":[{",".join(parts)}]{"," + tail if tail else ""}}}',
                        content_type="application/json")


def problem(err: GatewayError, request_id: str | None = None) -> web.Response:
    """An application/problem+json response."""
    body = err.problem()
    if request_id:
        body["request_id"] = request_id
    # (Bearer only: a Basic challenge would make browsers prompt over the dashboard's own sign-in; Basic is
    # still accepted, for TES clients that send it unasked.)
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    if err.status == 429 and err.extra.get("retry_after") is not None:
        headers = {"Retry-After": str(err.extra["retry_after"])}
    return web.Response(text=json.dumps(body, default=str), status=err.status,
                        content_type="application/problem+json", headers=headers)


MAX_JSON_DEPTH = 64


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored and sent as it is (NUL bytes, lone UTF-16 surrogates), or None."""
    if "\x00" in value:
        return "contains a NUL byte"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired UTF-16 surrogate (not valid Unicode text)"
    return None


def check_json(value: Any) -> None:
    """Refuse, naming the field, JSON the gateway cannot round-trip through its store and the vendors:
    NUL bytes, lone surrogates, non-finite numbers (NaN, Infinity, 1e999) and nesting past 64 levels."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        v, loc = stack.pop()
        where = ["body", *loc]
        if len(loc) > MAX_JSON_DEPTH:
            raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
                             errors=[{"loc": where[:MAX_JSON_DEPTH], "msg": "nested too deeply"}])
        if isinstance(v, str):
            why = text_problem(v)
            if why:
                raise ValidationError(f"{'.'.join(map(str, loc)) or 'body'}: {why}",
                                      errors=[{"loc": where, "msg": why}])
        elif isinstance(v, float) and not math.isfinite(v):
            raise ValidationError(f"{'.'.join(map(str, loc)) or 'body'}: numbers must be finite",
                                  errors=[{"loc": where, "msg": "not a finite number"}])
        elif isinstance(v, dict):
            for k, x in v.items():
                why = text_problem(k)
                if why:
                    raise ValidationError(f"a key under {'.'.join(map(str, loc)) or 'body'} {why}",
                                          errors=[{"loc": where, "msg": f"key {why}"}])
                stack.append((x, [*loc, k]))
        elif isinstance(v, list):
            stack.extend((x, [*loc, i]) for i, x in enumerate(v))


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; 413 over the limit, 415 compressed, 408 too slow, 400 when malformed,
    422 when it holds what the gateway cannot store (see check_json)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not accepted; send the JSON body "
                                   "uncompressed")
    try:
        raw = await asyncio.wait_for(request.read(), request.app[CONFIG].server.body_timeout_seconds)
    except web.HTTPRequestEntityTooLarge as err:
        raise PayloadTooLarge(f"request body larger than {request.app[CONFIG].server.max_body_bytes} bytes") \
            from err
    except TimeoutError:
        raise RequestTimeout("the request body did not arrive in time") from None
    if not raw:
        raise BadRequest("the request body is empty; send a JSON job spec")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
                         errors=[{"loc": ["body"], "msg": "nested too deeply"}]) from None
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"malformed JSON: {err}",
                         errors=[{"loc": ["body"], "msg": "malformed JSON"}]) from err
    check_json(data)
    return data


def check_request_text(request: web.Request) -> None:
    """Query parameters and path segments with NUL bytes or lone surrogates are a 400 naming them (the
    store cannot hold them, on SQLite and PostgreSQL alike)."""
    query = request.query.items() if request.query_string else ()
    for where, items in (("query", query), ("path", request.match_info.items())):
        for k, v in items:
            if v.isascii() and k.isascii() and "\x00" not in v and "\x00" not in k:
                continue  # the common case, decided without encoding
            why = text_problem(k) or text_problem(v)
            if why:
                raise BadRequest(f"{where} parameter {k!r} {why}", errors=[{"loc": [where, k], "msg": why}])


def only_query(request: web.Request, *allowed: str) -> None:
    """Refuse query parameters the endpoint does not know (a typo must not be silently ignored)."""
    if not request.query_string:
        return
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}"
                         + (f"; this endpoint takes {', '.join(allowed)}" if allowed else ""),
                         errors=[{"loc": ["query", u], "msg": "unknown parameter"} for u in unknown])


def qbool(request: web.Request, name: str) -> bool:
    """A boolean query parameter (absent is false; an empty value is refused, as the OpenAPI boolean says)."""
    v = request.query.get(name)
    if v is None:
        return False
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise BadRequest(f"query parameter {name} must be true or false",
                     errors=[{"loc": ["query", name], "msg": "expected true or false"}])


DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd])\Z")
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
        epoch = max(0.0, (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
        datetime.fromtimestamp(epoch, UTC)  # (9999-12-31T23:59:59-23:59 parses, but is in year 10000 in UTC)
        return epoch
    except (ValueError, OverflowError):
        raise BadRequest(f"query parameter {name} must be an ISO 8601 time (years 1-9999 in UTC) or an age such "
                         "as 15m, 2h or 7d", errors=[{"loc": ["query", name], "msg": "expected a time or an age"}]
                         ) from None


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
