"""Server-Sent Events: follow a job's transitions as they are written."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from gateway.service.jobs import JobService
from gateway.service.principal import Principal

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One SSE frame."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def watch_job(request: web.Request, svc: JobService, who: Principal, job_id: str) -> web.StreamResponse:
    """Stream a job's transitions (those already written first) until it is terminal."""
    await svc.get(who, job_id)  # 404 before the stream starts
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    last_seq = int(request.headers.get("Last-Event-ID", "0") or 0)
    idle = 0.0
    while True:
        for ev in await svc.events(who, job_id, after_seq=last_seq):
            last_seq = ev["seq"]
            await resp.write(sse("transition", ev, f"{job_id}:{ev['seq']}"))
            idle = 0.0
        job = await svc.get(who, job_id)
        if job.status.terminal:
            await resp.write(sse("end", {"id": job_id, "phase": job.status.phase}))
            break
        await asyncio.sleep(POLL_SECONDS)
        idle += POLL_SECONDS
        if idle >= HEARTBEAT_SECONDS:
            await resp.write(b": keep-alive\n\n")
            idle = 0.0
    await resp.write_eof()
    return resp


async def watch_all(request: web.Request, svc: JobService, who: Principal) -> web.StreamResponse:
    """Stream every transition of the jobs the caller may see, as they are written."""
    store = svc.store
    header = request.headers.get("Last-Event-ID", "")
    last = int(header) if header.isdigit() else await store.events.last_id()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    await resp.write(b": watching\n\n")
    idle = 0.0
    tenant = None if who.admin else who.tenant
    while True:
        rows = await store.events.since(last, tenant, who.projects)
        for t in rows:
            last = t["id"]
            data = {"job_id": t["job_id"], "job_name": t["name"], "backend": t["backend"], "seq": t["seq"],
                    "from_phase": t["from_phase"], "to_phase": t["to_phase"], "vendor_phase": t["vendor_phase"],
                    "message": t["message"], "source": t["source"], "at": t["at"]}
            await resp.write(sse("transition", data, str(t["id"])))
            idle = 0.0
        if not rows:
            await asyncio.sleep(POLL_SECONDS)
            idle += POLL_SECONDS
            if idle >= HEARTBEAT_SECONDS:
                await resp.write(b": keep-alive\n\n")
                idle = 0.0
