"""The gateway's wire: calling it over HTTP, decoding its answers and problem documents, reading its event
streams. Standard library only at import (aiohttp is imported by the calls that stream or run on a loop), so
that a CLI command starts quickly."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any
from urllib.parse import urlencode, urlsplit

from gateway import DEFAULT_TIMEOUT
from gateway.core.errors import GatewayError, GatewayUnreachable, ValidationError


def check_url(url: str, source: str = "--url") -> str:
    """The gateway's base URL, or a ValidationError saying what is wrong with it (and where it came from)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as err:  # e.g. an unclosed IPv6 bracket
        raise ValidationError(f"{source} {url!r} is not a URL: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = f" (did you mean http://{url.strip()}?)" if "://" not in url and url.strip() else ""
        raise ValidationError(f"{source} {url!r} is not an http:// or https:// URL{hint}")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as err:
        raise ValidationError(f"{source} {url!r} has a bad port: {err}") from None
    return url.strip().rstrip("/")


class GatewayClient:
    """Calls a running gateway; problem documents become GatewayErrors, and a gateway that cannot be
    reached (refused, dropped, silent, or not a gateway at all) is a GatewayUnreachable."""

    def __init__(self, url: str, api_key: str, timeout: float = DEFAULT_TIMEOUT, url_source: str = "--url") -> None:
        self.url = check_url(url, url_source)
        self.api_key = api_key
        self.timeout = timeout

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", **(extra or {})}

    def _unreachable(self, err: BaseException) -> GatewayUnreachable:
        return GatewayUnreachable(f"cannot reach the gateway at {self.url}: {self._why(err)}. "
                                  "Is `tjg serve` running there? (set --url or TJG_URL)")

    def _why(self, err: BaseException) -> str:
        if isinstance(err, TimeoutError | asyncio.TimeoutError):
            return f"no answer within {self.timeout:g}s (--timeout)"
        if isinstance(err, ConnectionRefusedError | socket.gaierror):
            return f"connection refused or host unknown ({getattr(err, 'strerror', None) or err})"
        if isinstance(err, http.client.RemoteDisconnected | http.client.IncompleteRead | ConnectionResetError):
            return "the connection was closed before the answer was complete"
        import aiohttp  # (an error of acall or stream: aiohttp is loaded already)

        if isinstance(err, aiohttp.ClientConnectorError):
            return f"connection refused or host unknown ({err.os_error.strerror or err.os_error})" \
                if err.os_error is not None else "cannot connect"
        if isinstance(err, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            return "the connection was closed before the answer was complete"
        return str(err) or type(err).__name__

    async def acall(self, method: str, path: str, *, params: Any = None, body: Any = None,
                    headers: dict[str, str] | None = None) -> Any:
        """One call on an event loop (aiohttp)."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout, connect=min(10.0, self.timeout))
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s, s.request(
                    method, self.url + path, params=params, json=body, headers=self._headers(headers)) as r:
                raw = await r.read()
                ctype = r.headers.get("Content-Type", "")
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise self._unreachable(err) from err
        return decode(status, ctype, raw, self.url)

    def call(self, method: str, path: str, *, params: Any = None, body: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        """One call, blocking, with the standard library only (for the CLI: importing aiohttp and starting
        an event loop cost a command more than the call itself)."""
        parts = urlsplit(self.url)
        query = ("?" + urlencode(params, doseq=True)) if params else ""
        data = json.dumps(body).encode() if body is not None else None
        hdrs = self._headers(headers)
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            conn.request(method, parts.path + path + query, body=data, headers=hdrs)
            r = conn.getresponse()
            raw = r.read()
            status, ctype = r.status, r.getheader("Content-Type", "") or ""
        except (OSError, http.client.HTTPException) as err:
            raise self._unreachable(err) from err
        finally:
            conn.close()
        return decode(status, ctype, raw, self.url)

    async def stream(self, path: str, params: Any = None) -> AsyncIterator[tuple[str, Any]]:
        """Follow a Server-Sent Events endpoint: yields (event, data). Ends when the server ends the
        stream; a connection that cannot be made or is cut is a GatewayUnreachable."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, connect=min(10.0, self.timeout), sock_read=None)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(
                    self.url + path, params=params, headers=self._headers({"Accept": "text/event-stream"})) as r:
                if r.status >= 400 or not r.headers.get("Content-Type", "").startswith("text/event-stream"):
                    decode(r.status, r.headers.get("Content-Type", ""), await r.read(), self.url)
                    raise GatewayUnreachable(f"{self.url}{path} did not answer with an event stream: "
                                             "is --url a trainjob-gateway?")
                async for item in iter_sse(r.content):
                    yield item
        except (aiohttp.ClientError, TimeoutError) as err:
            raise self._unreachable(err) from err


def decode(status: int, ctype: str, raw: bytes, url: str) -> Any:
    """A gateway answer as JSON, a problem document as a GatewayError, anything else as unreachable."""
    if status == 204 or (not raw and status < 400):
        return None
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
        if status < 400 or "json" not in ctype:
            raise GatewayUnreachable(f"{url} answered HTTP {status} with {ctype or 'no content type'}, not the "
                                     "gateway's JSON: is --url (or TJG_URL) a trainjob-gateway?") from None
    if status >= 400:
        raise problem_error(status, data)
    return data


async def iter_sse(lines: AsyncIterable[bytes]) -> AsyncIterator[tuple[str, Any]]:
    """Parse a Server-Sent Events stream into (event, JSON data) pairs."""
    event, data = "message", ""
    async for raw in lines:
        line = raw.decode().rstrip("\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and data:
            yield event, json.loads(data)
            event, data = "message", ""


def _error_classes() -> dict[str, type[GatewayError]]:
    out: dict[str, type[GatewayError]] = {}
    todo: list[type[GatewayError]] = [GatewayError]
    while todo:
        cls = todo.pop()
        out.setdefault(str(getattr(cls, "type_slug", "")), cls)
        todo.extend(cls.__subclasses__())
    return out


def problem_error(status: int, data: Any) -> GatewayError:
    """A problem document (or any error answer) as the error tree's exception for its type (NotFound,
    Conflict, ValidationError, ...), with the same status, detail and extra members."""
    if isinstance(data, dict) and "detail" in data:
        slug = str(data.get("type", "error")).rsplit("/", 1)[-1]
        cls = _error_classes().get(slug, GatewayError)
        err = cls.__new__(cls)
        GatewayError.__init__(err, str(data["detail"]), errors=data.get("errors"))
        err.title = str(data.get("title", "Error"))
        err.type_slug = str(data.get("type", "error")).rsplit("/", 1)[-1]
        err.extra = {k: v for k, v in data.items() if k not in ("type", "title", "status", "detail", "errors")}
    else:
        err = GatewayError(f"HTTP {status}")
        err.title = "Error"
    err.status = status
    return err


