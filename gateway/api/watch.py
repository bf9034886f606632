"""Server-Sent Events: follow a job's transitions, or all of a caller's, as they are written.

One `Notifier` reads new transitions from the store for every open stream (one query per tick,
whatever the number of streams) and hands each to the streams allowed to see it. A stream replays
what it missed first (after its Last-Event-ID), then waits on its own queue; it ends at once and
quietly when its client goes away, and with a last frame when the server shuts down.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from gateway.api.http import SHUTDOWN
from gateway.core.errors import BadRequest, TooManyRequests
from gateway.core.metrics import WATCH_STREAMS
from gateway.core.models import TERMINAL_PHASES
from gateway.service.jobs import JobService
from gateway.service.principal import Principal
from gateway.service.rows import dt
from gateway.store import Store
from gateway.store.visibility import sees

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
BATCH = 1000
MAX_EVENT_ID = 2 ** 31 - 1
JOB_EVENT_ID = re.compile(r"^(?:([0-9a-f]{32}):)?([0-9]{1,9})\Z")
CLOSED = object()  # queued to a stream whose client left or whose server stops


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One SSE frame."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@dataclass(eq=False)
class Subscription:
    """One open stream: what it may see, and its queue."""

    who: Principal
    request: web.Request
    job_id: str | None = None
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def sees(self, row: dict[str, Any]) -> bool:
        if self.job_id is not None:
            return bool(row["job_id"] == self.job_id)
        return sees(self.who, row)

    def gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()


class Notifier:
    """The one reader of new transitions for every watch stream of this process."""

    def __init__(self, store: Store, max_per_tenant: int) -> None:
        self.store = store
        self.max_per_tenant = max_per_tenant
        self.subs: set[Subscription] = set()
        self.per_tenant: dict[str, int] = {}
        self.last_id = 0
        self.woken = asyncio.Event()
        self.polls = 0  # store reads made, for tests and benchmarks

    def subscribe(self, who: Principal, request: web.Request, job_id: str | None = None) -> Subscription:
        """A new stream's subscription (a 429 past the tenant's cap)."""
        if self.per_tenant.get(who.tenant, 0) >= self.max_per_tenant:
            raise TooManyRequests(f"tenant {who.tenant} has {self.max_per_tenant} watch streams open already "
                                  "(server.max_streams_per_tenant); close one or try again later",
                                  extra={"retry_after": 5})
        sub = Subscription(who, request, job_id)
        self.subs.add(sub)
        self.per_tenant[who.tenant] = self.per_tenant.get(who.tenant, 0) + 1
        WATCH_STREAMS.inc()
        self.woken.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a stream (idempotent)."""
        if sub in self.subs:
            self.subs.discard(sub)
            self.per_tenant[sub.who.tenant] -= 1
            WATCH_STREAMS.dec()

    def close_all(self) -> None:
        """The server stops: every stream ends with its last frame."""
        for sub in list(self.subs):
            sub.queue.put_nowait(CLOSED)

    async def run(self) -> None:
        """Poll while anyone listens; hand each transition to the streams that may see it."""
        self.last_id = await self.store.events.last_id()
        ticks = 0
        while True:
            if not self.subs:
                self.woken.clear()
                await self.woken.wait()
                self.last_id = max(self.last_id, await self.store.events.last_id())
            try:
                rows = await self.store.events.since(self.last_id, None, limit=BATCH)
                self.polls += 1
            except Exception as err:  # a store hiccup must not end every stream
                log.warning("watch_poll_failed", error=str(err))
                rows = []
            for row in rows:
                self.last_id = row["id"]
                for sub in self.subs:
                    if sub.sees(row):
                        sub.queue.put_nowait(row)
            ticks += 1
            if ticks % 4 == 0:  # about once a second: end the streams whose clients left
                for sub in [s for s in self.subs if s.gone()]:
                    sub.queue.put_nowait(CLOSED)
                    self.unsubscribe(sub)
            if len(rows) < BATCH:
                await asyncio.sleep(POLL_SECONDS)


NOTIFIER = web.AppKey("notifier", Notifier)


def _transition(row: dict[str, Any]) -> dict[str, Any]:
    return {"kind": row["kind"], "job_id": row["job_id"], "job_name": row["name"], "backend": row["backend"],
            "seq": row["seq"], "from_phase": row["from_phase"], "to_phase": row["to_phase"],
            "vendor_phase": row["vendor_phase"], "message": row["message"], "reason": row.get("reason"),
            "source": row["source"], "at": row["at"]}


async def _stream(request: web.Request, sub: Subscription,
                  body: Callable[[web.StreamResponse], Awaitable[None]]) -> web.StreamResponse:
    """Run an event stream; a client that went away ends it quietly, a shutdown with a last frame."""
    notifier = request.app[NOTIFIER]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
        await resp.prepare(request)
        await body(resp)
        await resp.write_eof()
    except ConnectionError:
        pass  # the client left; nothing to tell anyone (a cancellation goes on up, after the unsubscribe)
    finally:
        notifier.unsubscribe(sub)
    return resp


async def _next(request: web.Request, resp: web.StreamResponse, sub: Subscription) -> Any:
    """The next queued row, with heartbeats while quiet; CLOSED when the stream must end (after a
    last frame if the server is stopping)."""
    while True:
        if request.app[SHUTDOWN].is_set():
            await resp.write(sse("shutdown", {"reason": "the gateway is shutting down"}))
            return CLOSED
        try:
            item = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_SECONDS)
        except TimeoutError:
            await resp.write(b": keep-alive\n\n")
            continue
        if item is CLOSED and request.app[SHUTDOWN].is_set():
            await resp.write(sse("shutdown", {"reason": "the gateway is shutting down"}))
        return item


def job_resume_point(header: str, job_id: str) -> int:
    """The seq after which a job stream resumes: Last-Event-ID is the `<job id>:<seq>` it was sent (a
    bare seq is accepted too); anything else is a 400."""
    if not header.strip():
        return 0
    m = JOB_EVENT_ID.match(header.strip())
    if m is None or (m.group(1) is not None and m.group(1) != job_id):
        raise BadRequest(f"Last-Event-ID {header[:80]!r} is not an id of this job's stream (<job id>:<seq>)",
                         errors=[{"loc": ["header", "Last-Event-ID"], "msg": "not an event id of this stream"}])
    return int(m.group(2))


def all_resume_point(header: str) -> int | None:
    """The transition id after which /v1/events resumes, None for "from now"; a malformed id is a 400."""
    h = header.strip()
    if not h:
        return None
    if not h.isdigit() or len(h) > 10 or int(h) > MAX_EVENT_ID:
        raise BadRequest(f"Last-Event-ID {h[:80]!r} is not an id this stream sent",
                         errors=[{"loc": ["header", "Last-Event-ID"], "msg": "not an event id of this stream"}])
    return int(h)


async def watch_job(request: web.Request, svc: JobService, who: Principal, job_id: str) -> web.StreamResponse:
    """Stream a job's transitions (those after Last-Event-ID first) until it is terminal."""
    job = await svc.get(who, job_id)  # 404 before the stream starts
    last_seq = job_resume_point(request.headers.get("Last-Event-ID", ""), job_id)
    sub = request.app[NOTIFIER].subscribe(who, request, job_id)  # before the replay: nothing falls between

    async def body(resp: web.StreamResponse) -> None:
        nonlocal last_seq
        ended = job.status.terminal and not await svc.events(who, job_id, after_seq=last_seq)
        for ev in await svc.events(who, job_id, after_seq=last_seq):
            last_seq = ev["seq"]
            await resp.write(sse(ev["kind"], ev, f"{job_id}:{ev['seq']}"))
            ended = ended or (ev["kind"] == "transition" and ev["to_phase"] in TERMINAL_PHASES)
        while not ended:
            row = await _next(request, resp, sub)
            if row is CLOSED:
                return
            if row["seq"] <= last_seq:
                continue
            last_seq = row["seq"]
            ev = {k: v for k, v in _transition(row).items() if k not in ("job_id", "job_name", "backend")}
            ev["at"] = dt(row["at"])
            await resp.write(sse(row["kind"], ev, f"{job_id}:{row['seq']}"))
            ended = row["kind"] == "transition" and row["to_phase"] in TERMINAL_PHASES
        final = await svc.get(who, job_id)
        await resp.write(sse("end", {"id": job_id, "phase": final.status.phase}))

    return await _stream(request, sub, body)


async def watch_all(request: web.Request, svc: JobService, who: Principal) -> web.StreamResponse:
    """Stream every transition of the jobs the caller may see, from now or after Last-Event-ID."""
    resume = all_resume_point(request.headers.get("Last-Event-ID", ""))
    sub = request.app[NOTIFIER].subscribe(who, request)
    last = resume if resume is not None else await svc.store.events.last_id()

    async def body(resp: web.StreamResponse) -> None:
        nonlocal last
        await resp.write(b": watching\n\n")
        while True:  # the replay after Last-Event-ID, a page at a time
            rows = await svc.store.events.since(last, who, limit=BATCH)
            for row in rows:
                last = row["id"]
                await resp.write(sse(row["kind"], _transition(row), str(row["id"])))
            if len(rows) < BATCH:
                break
        while True:
            row = await _next(request, resp, sub)
            if row is CLOSED:
                return
            if row["id"] <= last:
                continue
            last = row["id"]
            await resp.write(sse(row["kind"], _transition(row), str(row["id"])))

    return await _stream(request, sub, body)
