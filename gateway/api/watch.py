"""Server-Sent Events: follow a job's transitions as they are written."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.api.http import SHUTDOWN
from gateway.service.jobs import JobService
from gateway.service.principal import Principal

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One SSE frame."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def _wait(request: web.Request, seconds: float) -> bool:
    """Sleep between polls; True when the server is shutting down (the stream must end now)."""
    closing = request.app[SHUTDOWN]
    try:
        await asyncio.wait_for(closing.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def _pause(request: web.Request, resp: web.StreamResponse, idle: float) -> float | None:
    """Wait one poll, with a heartbeat when quiet for long; the new idle time, or None when the stream
    must end (a shutdown: a last frame says so)."""
    if await _wait(request, POLL_SECONDS):
        await resp.write(sse("shutdown", {"reason": "the gateway is shutting down"}))
        return None
    idle += POLL_SECONDS
    if idle >= HEARTBEAT_SECONDS:
        await resp.write(b": keep-alive\n\n")
        idle = 0.0
    return idle


async def _stream(request: web.Request, body: Callable[[web.StreamResponse], Awaitable[None]]) -> web.StreamResponse:
    """Run an event stream; a client that went away ends it quietly, a shutdown with a last frame."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        await body(resp)
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client left; nothing to tell anyone
    return resp


async def watch_job(request: web.Request, svc: JobService, who: Principal, job_id: str) -> web.StreamResponse:
    """Stream a job's transitions (those already written first) until it is terminal."""
    await svc.get(who, job_id)  # 404 before the stream starts
    return await _stream(request, lambda resp: _follow_job(request, resp, svc, who, job_id))


async def _follow_job(request: web.Request, resp: web.StreamResponse, svc: JobService, who: Principal,
                      job_id: str) -> None:
    last_seq = int(request.headers.get("Last-Event-ID", "0") or 0)
    idle = 0.0
    while True:
        for ev in await svc.events(who, job_id, after_seq=last_seq):
            last_seq = ev["seq"]
            await resp.write(sse(ev["kind"], ev, f"{job_id}:{ev['seq']}"))
            idle = 0.0
        job = await svc.get(who, job_id)
        if job.status.terminal:
            await resp.write(sse("end", {"id": job_id, "phase": job.status.phase}))
            return
        pause = await _pause(request, resp, idle)
        if pause is None:
            return
        idle = pause


async def watch_all(request: web.Request, svc: JobService, who: Principal) -> web.StreamResponse:
    """Stream every transition of the jobs the caller may see, as they are written."""
    store = svc.store
    header = request.headers.get("Last-Event-ID", "")
    last = int(header) if header.isdigit() else await store.events.last_id()
    return await _stream(request, lambda resp: _follow_all(request, resp, svc, who, last))


async def _follow_all(request: web.Request, resp: web.StreamResponse, svc: JobService, who: Principal,
                      last: int) -> None:
    store = svc.store
    await resp.write(b": watching\n\n")
    idle = 0.0
    tenant = None if who.admin else who.tenant
    while True:
        rows = await store.events.since(last, tenant, who.projects)
        for t in rows:
            last = t["id"]
            data = {"kind": t["kind"], "job_id": t["job_id"], "job_name": t["name"], "backend": t["backend"],
                    "seq": t["seq"],
                    "from_phase": t["from_phase"], "to_phase": t["to_phase"], "vendor_phase": t["vendor_phase"],
                    "message": t["message"], "source": t["source"], "at": t["at"]}
            await resp.write(sse(t["kind"], data, str(t["id"])))
            idle = 0.0
        if not rows:
            pause = await _pause(request, resp, idle)
            if pause is None:
                return
            idle = pause
