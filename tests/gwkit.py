"""Helpers for tests that run the gateway in-process: a client wrapper and request builders."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import create_app, server_options
from gateway.core.config import Config

ALPHA = {"Authorization": "Bearer alpha-key-123"}
BETA = {"Authorization": "Bearer beta-key-456"}
OPS = {"Authorization": "Bearer ops-key-789"}


def spec(backend: str = "runai", name: str = "train", **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "backend": backend, "image": "python:3.11", "command": ["python", "t.py"],
                         "env": {"SIM_RUN_SECONDS": "1"}}
    d.update(kw)
    return d


class GW:
    """A running gateway and a client for it."""

    def __init__(self, client: TestClient[Any, Any], config: Config) -> None:
        self.c = client
        self.config = config

    async def call(self, method: str, path: str, headers: dict[str, str] | None = ALPHA, **kw: Any) -> tuple[
            int, Any]:
        async with self.c.request(method, path, headers=headers, **kw) as r:
            text = await r.text()
            return r.status, json.loads(text) if text and r.content_type.endswith("json") else text

    async def submit(self, body: dict[str, Any], headers: dict[str, str] = ALPHA, **kw: Any) -> dict[str, Any]:
        status, job = await self.call("POST", "/v1/jobs", headers=headers, json=body, **kw)
        assert status == 201, job
        return dict(job)

    async def wait_phase(self, job_id: str, phases: set[str], headers: dict[str, str] = ALPHA,
                         within: float = 20) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            _, job = await self.call("GET", f"/v1/jobs/{job_id}", headers=headers)
            if job["status"]["phase"] in phases or asyncio.get_running_loop().time() > deadline:
                return dict(job)
            await asyncio.sleep(0.05)

    async def sim_stats(self, backend: str) -> dict[str, int]:
        url = self.config.backend(backend).url
        async with aiohttp.ClientSession() as s, s.get(url + "/_sim/stats") as r:
            return dict((await r.json())["requests"])


async def start_gateway(config: Config) -> GW:
    server = TestServer(create_app(config))
    await server.start_server(**server_options())  # the options `tjg serve` runs with
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    return GW(client, config)
