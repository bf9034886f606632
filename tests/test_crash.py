"""SIGKILL the gateway in the middle of a burst of submits: nothing acknowledged is lost or duplicated."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port
from tests.procs import Proc, Simulators, wait_http, write_config

pytestmark = pytest.mark.slow
AUTH = {"Authorization": "Bearer alpha-key-123"}


async def burst(url: str, n: int, kill_after: int, gateway: Proc) -> dict[str, dict[str, Any]]:
    """Submit `n` jobs 20 at a time; SIGKILL the gateway once `kill_after` were acknowledged."""
    acked: dict[str, dict[str, Any]] = {}
    gate = asyncio.Semaphore(20)
    killed = asyncio.Event()

    async def one(i: int, s: aiohttp.ClientSession) -> None:
        body = {"name": f"burst-{i}", "backend": "runai" if i % 2 else "modelarts", "image": "python:3.11",
                "env": {"SIM_RUN_SECONDS": "1"}}
        async with gate:
            if killed.is_set():
                return
            try:
                async with s.post(url + "/v1/jobs", json=body, headers=AUTH) as r:
                    if r.status == 201:
                        job = await r.json()
                        acked[job["id"]] = job
            except aiohttp.ClientError:
                return
        if len(acked) >= kill_after and not killed.is_set():
            killed.set()
            gateway.kill()

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(one(i, s) for i in range(n)))
    assert killed.is_set(), "the burst ended before the kill"
    return acked


async def test_sigkill_mid_burst_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    sims = await Simulators(tmp_path, faults="delay_ms=40").start()  # keep creates in flight
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", f"sqlite+aiosqlite:///{tmp_path}/tjg.db", sims.runai_port,
                       sims.ma_port, port)
    url = f"http://127.0.0.1:{port}"
    gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log").start()
    try:
        await wait_http(url + "/healthz")
        acked = await burst(url, 100, 40, gw)
        assert 40 <= len(acked) < 100
        gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log").start()
        await wait_http(url + "/healthz")
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as s:
            while True:
                async with s.get(url + "/v1/jobs?limit=500", headers=AUTH) as r:
                    jobs = (await r.json())["jobs"]
                if all(j["backend_job_id"] for j in jobs) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        by_id = {j["id"]: j for j in jobs}
        assert len(by_id) == len(jobs)
        assert set(acked) <= set(by_id), "an acknowledged job was lost from the store"
        assert all(j["backend_job_id"] for j in jobs), "a submission was left unresolved"
        vendor = await sims.vendor_names()
        for backend, names in vendor.items():
            assert len(names) == len(set(names)), f"duplicate job on {backend}"
            stored = sorted(j["vendor_name"] for j in jobs if j["backend"] == backend)
            assert sorted(names) == stored, f"{backend}: vendor and store disagree"
        for job in acked.values():
            assert vendor[job["backend"]].count(job["vendor_name"]) == 1
        log = (tmp_path / "gw.log").read_text()
        assert "recovering_pending_submissions" in log or len(jobs) == len(acked)
    finally:
        gw.stop()
        sims.stop()
