"""Connection limits aiohttp does not have: a deadline for a whole request head (slowloris) and a cap
on open connections per client address. Request bodies have their own deadline (api.http.read_json).

The guard wraps each connection's aiohttp protocol and only watches: it counts request heads as
aiohttp parses them and closes a connection that has neither a request in progress nor a new
request head for `header_timeout` seconds.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)


class ConnectionGuard:
    """Limits shared by every connection of one listening socket."""

    def __init__(self, header_timeout: float, max_per_client: int) -> None:
        self.header_timeout = header_timeout
        self.max_per_client = max_per_client
        self.open: Counter[str] = Counter()
        self.refused = 0
        self.timed_out = 0

    def wrap(self, factory: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for loop.create_server around aiohttp's."""
        return lambda: _Guarded(factory(), self)


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's RequestHandler, watched."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.addr = ""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.addr = str(peer[0]) if peer else "?"
        if self.guard.open[self.addr] >= self.guard.max_per_client:
            self.guard.refused += 1
            if self.guard.refused == 1 or self.guard.refused % 1000 == 0:
                log.warning("connection_refused", client=self.addr, open=self.guard.open[self.addr],
                            limit="server.max_connections_per_client", refused=self.guard.refused)
            transport.close()
            return
        self.guard.open[self.addr] += 1
        self.counted = True
        self.inner.connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.guard.header_timeout, self._check, self.inner._request_count)

    def _check(self, heads_before: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.inner._request_count == heads_before and not self.inner._request_in_progress:
            self.guard.timed_out += 1
            self.transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.counted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.counted:
            result: bool | None = self.inner.eof_received()
            return result
        return None

    def pause_writing(self) -> None:
        if self.counted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.counted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.counted:
            self.counted = False
            self.guard.open[self.addr] -= 1
            if self.guard.open[self.addr] <= 0:
                del self.guard.open[self.addr]
            self.inner.connection_lost(exc)
        self.transport = None


class GuardedSite(web.SockSite):
    """aiohttp's SockSite with every connection behind a ConnectionGuard."""

    def __init__(self, runner: web.BaseRunner, sock: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.wrap(server), sock=self._sock, ssl=self._ssl_context, backlog=self._backlog)
