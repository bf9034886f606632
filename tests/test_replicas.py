"""Three `tjg serve` processes on one PostgreSQL; one is SIGKILLed mid-run; nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.background.webhooks import verify_signature
from tests.conftest import eventually, free_port, fresh_pg_database, require_postgres
from tests.procs import Proc, Simulators, wait_http, write_config
from tests.test_sync import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
AUTH = {"Authorization": "Bearer alpha-key-123"}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


async def test_three_replicas_one_killed(tmp_path: Path) -> None:
    pg = require_postgres()
    db_url, drop = await fresh_pg_database(pg)
    rx = Receiver()
    rx_runner = await rx.start()
    sims = await Simulators(tmp_path, speed=20.0).start()
    ports = [free_port() for _ in range(3)]
    replicas: list[Proc] = []
    try:
        for i, port in enumerate(ports):
            cfg = write_config(tmp_path / f"gw{i}.yaml", db_url, sims.runai_port, sims.ma_port, port,
                               replica={"lease_seconds": 2.0, "reconcile_after": 3.0},
                               tenants=[{"name": "alpha", "api_keys": ["alpha-key-123"], "role": "admin",
                                         "webhooks": [{"url": rx.url, "secret": "replica-hook-secret"}]}])
            replicas.append(Proc(["serve", "--config", str(cfg)], tmp_path / f"gw{i}.log").start())
            await wait_http(f"http://127.0.0.1:{port}/healthz")
        acked: dict[str, dict[str, Any]] = {}
        async with aiohttp.ClientSession() as s:

            async def submit(i: int) -> None:
                port = ports[i % 3]
                body = {"name": f"rep-{i}", "backend": "runai" if i % 2 else "modelarts", "image": "python:3.11",
                        "env": {"SIM_RUN_SECONDS": "30"}}  # 1.5 s at speed 20
                try:
                    async with s.post(f"http://127.0.0.1:{port}/v1/jobs", json=body, headers=AUTH) as r:
                        if r.status == 201:
                            job = await r.json()
                            acked[job["id"]] = job
                except aiohttp.ClientError:
                    pass  # the killed replica: not acknowledged

            await asyncio.gather(*(submit(i) for i in range(15)))
            replicas[0].kill()  # the first one started holds the leases
            await asyncio.gather(*(submit(i) for i in range(15, 30)))
            assert len(acked) >= 20
            survivor = f"http://127.0.0.1:{ports[1]}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                async with s.get(survivor + "/v1/jobs?limit=500", headers=AUTH) as r:
                    jobs = {j["id"]: j for j in (await r.json())["jobs"]}
                if set(acked) <= set(jobs) and all(jobs[j]["status"]["terminal"] for j in acked):
                    break
                await asyncio.sleep(0.3)
            assert set(acked) <= set(jobs)
            assert all(jobs[j]["status"]["phase"] == "SUCCEEDED" for j in acked)
            histories = {}
            for job_id in jobs:
                async with s.get(f"{survivor}/v1/jobs/{job_id}/events?vendor=false", headers=AUTH) as r:
                    histories[job_id] = (await r.json())["events"]
        for job_id, evs in histories.items():
            assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), "gaps or repeats in history"
            terminal = [e for e in evs if e["to_phase"] in TERMINAL]
            assert len(terminal) == 1 and evs[-1] is terminal[0], f"{job_id}: terminal phase reached once"
        vendor = await sims.vendor_names()
        for backend, names in vendor.items():
            assert len(names) == len(set(names)), f"duplicate job on {backend}"
        want = {f"{j}:{e['seq']}" for j, evs in histories.items() for e in evs}
        async def delivered() -> bool:
            return {h["X-TJG-Event-Id"] for h, _ in rx.got} >= want

        await eventually(delivered, within=30)
        got = Counter(h["X-TJG-Event-Id"] for h, _ in rx.got)
        assert set(got) == want, "one delivery per transition"
        for headers, body in rx.got:
            assert verify_signature("replica-hook-secret", headers["X-TJG-Timestamp"], body,
                                    headers["X-TJG-Signature"])
            if got[headers["X-TJG-Event-Id"]] > 1:
                first = [h for h, _ in rx.got if h["X-TJG-Event-Id"] == headers["X-TJG-Event-Id"]]
                assert all(h["X-TJG-Redelivery"] == "true" for h in first[1:]), "an unmarked duplicate"
        logs = "".join((tmp_path / f"gw{i}.log").read_text() for i in (1, 2))
        assert "lease_acquired" in logs, "a survivor took over the background work"
    finally:
        for p in replicas:
            p.stop()
        sims.stop()
        await rx_runner.cleanup()
        await drop()
