"""A small HTTP client of the gateway, used by the CLI's client commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.core.errors import GatewayError, GatewayUnreachable, ValidationError

DEFAULT_TIMEOUT = 60.0  # longer than the gateway's inline submit (15 s), short enough to notice a hang


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
        if isinstance(err, TimeoutError | asyncio.TimeoutError):
            why = f"no answer within {self.timeout:g}s (--timeout)"
        elif isinstance(err, aiohttp.ClientConnectorError):
            why = f"connection refused or host unknown ({err.os_error.strerror or err.os_error})" \
                if err.os_error is not None else "cannot connect"
        elif isinstance(err, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            why = "the connection was closed before the answer was complete"
        else:
            why = str(err) or type(err).__name__
        return GatewayUnreachable(f"cannot reach the gateway at {self.url}: {why}. "
                                  "Is `tjg serve` running there? (set --url or TJG_URL)")

    async def acall(self, method: str, path: str, *, params: Any = None, body: Any = None,
                    headers: dict[str, str] | None = None) -> Any:
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

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """acall, synchronously (for the CLI)."""
        return asyncio.run(self.acall(method, path, **kw))

    async def stream(self, path: str, params: Any = None) -> AsyncIterator[tuple[str, Any]]:
        """Follow a Server-Sent Events endpoint: yields (event, data). Ends when the server ends the
        stream; a connection that cannot be made or is cut is a GatewayUnreachable."""
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


def problem_error(status: int, data: Any) -> GatewayError:
    """A problem document (or any error answer) as a GatewayError with the same status."""
    if isinstance(data, dict) and "detail" in data:
        err = GatewayError(str(data["detail"]), errors=data.get("errors"))
        err.title = str(data.get("title", "Error"))
        err.type_slug = str(data.get("type", "error")).rsplit("/", 1)[-1]
        err.extra = {k: v for k, v in data.items() if k not in ("type", "title", "status", "detail", "errors")}
    else:
        err = GatewayError(f"HTTP {status}")
        err.title = "Error"
    err.status = status
    return err
