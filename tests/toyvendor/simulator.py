"""The toy vendor's fake: jobs that queue, run for `run_seconds` and end done (or stopped when cancelled)."""

from __future__ import annotations

import itertools
import time
from typing import Any

from aiohttp import web


def create_simulator(credentials: list[tuple[str, str]] | None = None, speed: float = 1.0,
                     run_seconds: float = 30.0, **_: Any) -> web.Application:
    """The toy vendor as an aiohttp app; it wants `Authorization: Token <secret>` when credentials are given."""
    jobs: dict[str, dict[str, Any]] = {}
    ids = itertools.count(1)
    tokens = {secret for _, secret in credentials or []}

    def phase(job: dict[str, Any]) -> str:
        if job["stopped"]:
            return "stopped"
        age = (time.monotonic() - job["created"]) * speed
        return "queued" if age < 0.2 else "running" if age < run_seconds else "done"

    def view(job: dict[str, Any]) -> dict[str, Any]:
        return {"id": job["id"], "name": job["name"], "state": phase(job), "created": job["wall"]}

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if tokens and request.headers.get("Authorization", "").removeprefix("Token ") not in tokens:
            return web.json_response({"error": "bad token"}, status=401)
        resp: web.StreamResponse = await handler(request)
        return resp

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        if any(j["name"] == body["name"] for j in jobs.values()):
            return web.json_response({"error": "name taken"}, status=409)
        job = {"id": f"t{next(ids)}", "name": body["name"], "created": time.monotonic(), "wall": time.time(),
               "stopped": False}
        jobs[job["id"]] = job
        return web.json_response(view(job), status=201)

    async def listing(request: web.Request) -> web.Response:
        q = request.query
        rows = [j for j in jobs.values() if "name" not in q or j["name"] == q["name"]]
        start, limit = int(q.get("offset", 0)), int(q.get("limit", 100))
        return web.json_response({"jobs": [view(j) for j in rows[start:start + limit]],
                                  "more": start + limit < len(rows)})

    async def show(request: web.Request) -> web.Response:
        job = jobs.get(request.match_info["id"])
        return web.json_response(view(job)) if job else web.json_response({"error": "no such job"}, status=404)

    async def stop(request: web.Request) -> web.Response:
        job = jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"error": "no such job"}, status=404)
        job["stopped"] = True
        return web.json_response(view(job))

    async def remove(request: web.Request) -> web.Response:
        jobs.pop(request.match_info["id"], None)
        return web.json_response({})

    app = web.Application(middlewares=[auth])
    app.router.add_post("/jobs", create)
    app.router.add_get("/jobs", listing)
    app.router.add_get("/jobs/{id}", show)
    app.router.add_post("/jobs/{id}/stop", stop)
    app.router.add_delete("/jobs/{id}", remove)
    return app
