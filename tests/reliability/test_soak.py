"""Fault soak: many submits through the gateway with faults on at both simulators."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import eventually, gateway_config, record_figures
from tests.gwkit import ALPHA, GW, start_gateway
from tests.procs import listed_names

pytestmark = pytest.mark.reliability
FAULTS = {"http503": 0.1, "http429": 0.05, "reset": 0.03, "drop_after_commit": 0.05}
EXPECT = {"completed": "SUCCEEDED", "failed": "FAILED", "serving": "RUNNING"}


async def vendor_names(gw: GW) -> dict[str, Counter[str]]:
    """Every job name on each simulated vendor, through the vendor's own list API."""
    import adapters.registry  # noqa: F401  (registers the vendors)
    from gateway.core.adapter import REGISTRY

    out: dict[str, Counter[str]] = {}
    async with aiohttp.ClientSession() as s:
        for b in gw.config.backends:
            adapter = REGISTRY.create(b, s)
            names: Counter[str] = Counter(await listed_names(adapter))
            if b.kind == "modelarts":  # real-time services have their own list
                offset, total = 0, 1
                while offset < total:
                    res = await adapter.client.services(offset=offset, limit=100)  # type: ignore[attr-defined]
                    names.update(str(item["name"]) for item in res.get("data") or [])
                    total, offset = int(res.get("total") or 0), offset + 100
            out[b.name] = names
    return out


async def test_fault_soak_every_job_once_in_its_expected_phase(tmp_path: Path, long_mode: bool) -> None:
    n = 1000 if long_mode else 150
    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/soak.db", speed=20.0,
                         backend_extra={"simulate_faults": FAULTS, "sync_interval": 0.5, "breaker_threshold": 50,
                                        "retry": {"attempts": 6, "base_delay": 0.02, "max_delay": 0.5}})
    gw = await start_gateway(cfg)
    started = time.monotonic()
    try:
        acked: dict[str, dict[str, Any]] = {}
        expected: dict[str, str] = {}
        gate = asyncio.Semaphore(16)
        client_retries = 0

        async def one(i: int) -> None:
            nonlocal client_retries
            outcome = "failed" if i % 5 == 0 else "completed"
            body: dict[str, Any] = {"name": f"soak-{i}", "backend": "runai" if i % 2 else "modelarts",
                                    "image": "python:3.11", "env": {"SIM_OUTCOME": outcome, "SIM_RUN_SECONDS": "2"}}
            if i % 10 == 3:  # a served model: it ends up RUNNING, and must exist exactly once too
                body.update(kind="inference", serving={"port": 8080})
                outcome = "serving"
            headers = {**ALPHA, "Idempotency-Key": f"soak-{i}"}
            async with gate:
                for _ in range(10):  # a client retrying with its key: never a second job
                    status, job = await gw.call("POST", "/v1/jobs", headers=headers, json=body)
                    if status == 201:
                        acked[job["id"]] = job
                        expected[job["id"]] = EXPECT[outcome]
                        return
                    client_retries += 1
                    await asyncio.sleep(0.2)
            raise AssertionError(f"soak-{i} never accepted: {status} {job}")

        await asyncio.gather(*(one(i) for i in range(n)))
        submit_seconds = time.monotonic() - started

        seen: dict[str, dict[str, Any]] = {}

        async def all_ended() -> bool:
            _, page = await gw.call("GET", "/v1/jobs?limit=500&name_prefix=soak-")
            listed = page["jobs"]
            while page["next_page_token"]:
                _, page = await gw.call("GET", f"/v1/jobs?limit=500&name_prefix=soak-&page_token="
                                               f"{page['next_page_token']}")
                listed += page["jobs"]
            seen.clear()
            seen.update({j["id"]: j for j in listed})
            return len(listed) == n and all(j["status"]["terminal"] or (j["kind"] == "inference" and
                                                                         j["status"]["phase"] == "RUNNING")
                                            for j in listed)

        assert await eventually(all_ended, within=180 if long_mode else 90, step=0.5), "not every job ended"
        jobs = seen
        assert set(jobs) == set(acked), "lost or extra jobs in the store"
        wrong = {j: (jobs[j]["status"]["phase"], want) for j, want in expected.items()
                 if jobs[j]["status"]["phase"] != want}
        assert not wrong, f"jobs in unexpected phases: {list(wrong.items())[:5]}"
        faults_served = 0
        async with aiohttp.ClientSession() as s:
            for b in cfg.backends:
                async with s.get(b.url + "/_sim/fault-log") as r:
                    faults_served += len(await r.json())
                async with s.put(b.url + "/_sim/faults", json={}):
                    pass
        names = await vendor_names(gw)
        dups = {b: [k for k, v in c.items() if v > 1] for b, c in names.items()}
        assert not any(dups.values()), f"duplicates on the vendor: {dups}"
        for job in jobs.values():
            assert names[job["backend"]][job["vendor_name"]] == 1, f"{job['vendor_name']} not on its vendor once"
        total_vendor = sum(sum(c.values()) for c in names.values())
        assert total_vendor == n
        record_figures("fault soak", submits=n, inference_submits=sum(1 for j in jobs.values()
                                                                    if j["kind"] == "inference"),
                       acknowledged=len(acked), vendor_jobs=total_vendor,
                       duplicates=0, lost=0, wrong_phase=0, faults_injected=faults_served,
                       client_retries=client_retries, submit_seconds=round(submit_seconds, 1),
                       total_seconds=round(time.monotonic() - started, 1))
    finally:
        await gw.c.close()
