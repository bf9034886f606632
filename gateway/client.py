"""A small HTTP client of the gateway, used by the CLI's client commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp

from gateway.core.errors import BadRequest, GatewayError


class GatewayClient:
    """Calls a running gateway; problem documents become GatewayErrors."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", **(extra or {})}

    async def _call(self, method: str, path: str, *, params: Any = None, body: Any = None,
                    headers: dict[str, str] | None = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=120)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s, s.request(
                    method, self.url + path, params=params, json=body, headers=self._headers(headers)) as r:
                text = await r.text()
                data = json.loads(text) if text else None
                if r.status >= 400:
                    raise _problem(r.status, data)
                return data
        except aiohttp.ClientConnectorError as err:
            raise GatewayError(f"cannot reach the gateway at {self.url}: is `tjg serve` running? "
                               f"(set --url or TJG_URL)") from err

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """Synchronous wrapper for the CLI."""
        return asyncio.run(self._call(method, path, **kw))

    async def stream(self, path: str, params: Any = None) -> AsyncIterator[tuple[str, Any]]:
        """Follow a Server-Sent Events endpoint: yields (event, data)."""
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(timeout=timeout) as s, s.get(
                self.url + path, params=params, headers=self._headers({"Accept": "text/event-stream"})) as r:
            if r.status >= 400:
                text = await r.text()
                raise _problem(r.status, json.loads(text) if text else None)
            async for item in iter_sse(r.content):
                yield item


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


def _problem(status: int, data: Any) -> GatewayError:
    if isinstance(data, dict) and "detail" in data:
        err = GatewayError(str(data["detail"]), errors=data.get("errors"))
        err.status = status
        err.title = str(data.get("title", "Error"))
        err.type_slug = str(data.get("type", "error")).rsplit("/", 1)[-1]
        extra = {k: v for k, v in data.items() if k not in ("type", "title", "status", "detail", "errors")}
        err.extra = extra
        return err
    err2 = BadRequest(f"HTTP {status}")
    err2.status = status
    return err2
