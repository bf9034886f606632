"""Crash (SIGKILL during submits and during sync) and outage (a backend frozen) with real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import eventually, free_port, record_figures
from tests.procs import Proc, Simulators, wait_http, write_config
from tests.test_crash import burst

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
AUTH = {"Authorization": "Bearer alpha-key-123"}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


async def get_all(url: str) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(url + "/v1/jobs?limit=500", headers=AUTH) as r:
        return {j["id"]: j for j in (await r.json())["jobs"]}


async def histories(url: str, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    async with aiohttp.ClientSession() as s:
        for job_id in ids:
            async with s.get(f"{url}/v1/jobs/{job_id}/events?vendor=false", headers=AUTH) as r:
                out[job_id] = (await r.json())["events"]
    return out


def check_histories(hist: dict[str, list[dict[str, Any]]]) -> None:
    for job_id, evs in hist.items():
        assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), f"{job_id}: broken history"
        ends = [e for e in evs if e["to_phase"] in TERMINAL]
        assert len(ends) <= 1 and (not ends or evs[-1] is ends[0]), f"{job_id}: left a terminal phase"


async def synced(url: str) -> bool:
    """Whether every backend of the gateway at `url` has finished a sync cycle since it started."""
    async with aiohttp.ClientSession() as s, s.get(url + "/v1/backends", headers=AUTH) as r:
        return all((b.get("sync") or {}).get("last_ok") for b in await r.json())


async def test_sigkill_during_submits_and_during_sync(tmp_path: Path, long_mode: bool) -> None:
    rounds = 3 if long_mode else 1
    sims = await Simulators(tmp_path, speed=20.0, faults="delay_ms=30").start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = write_config(tmp_path / "gw.yaml", f"sqlite+aiosqlite:///{tmp_path}/tjg.db", sims.runai_port,
                       sims.ma_port, port)
    gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log").start()
    acked: dict[str, dict[str, Any]] = {}
    kills = 0
    try:
        for _ in range(rounds):
            await wait_http(url + "/healthz")
            acked.update(await burst(url, 60, 25, gw))  # kill 1: in the middle of submits
            kills += 1
            gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log").start()
            await wait_http(url + "/healthz")
            assert await eventually(lambda: synced(url), within=30)  # sync cycles running over live jobs
            gw.kill()  # kill 2: in the middle of sync
            kills += 1
            gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log").start()
        await wait_http(url + "/healthz")

        async def settled() -> bool:
            jobs = await get_all(url)
            return set(acked) <= set(jobs) and all(j["status"]["phase"] in TERMINAL and j["backend_job_id"]
                                                   for j in jobs.values())

        assert await eventually(settled, within=90, step=0.5), "jobs did not all settle after the crashes"
        jobs = await get_all(url)
        assert all(jobs[j]["status"]["phase"] == "SUCCEEDED" for j in acked)
        check_histories(await histories(url, list(jobs)))
        vendor = await sims.vendor_names()
        for backend, names in vendor.items():
            assert len(names) == len(set(names)), f"duplicates on {backend}"
            assert sorted(names) == sorted(j["vendor_name"] for j in jobs.values() if j["backend"] == backend)
        record_figures("crash", sigkills=kills, acknowledged=len(acked), stored=len(jobs),
                       vendor_jobs=sum(len(v) for v in vendor.values()), lost=0, duplicates=0)
    finally:
        gw.stop()
        sims.stop()


async def test_outage_frozen_backend(tmp_path: Path, long_mode: bool) -> None:
    outage = 8.0 if long_mode else 3.0
    sims = await Simulators(tmp_path, speed=2.0).start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = write_config(tmp_path / "gw.yaml", f"sqlite+aiosqlite:///{tmp_path}/tjg.db", sims.runai_port,
                       sims.ma_port, port, backend_extra={"sync_interval": 0.3, "read_timeout": 0.5,
                                                          "connect_timeout": 0.5})
    gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log").start()
    try:
        await wait_http(url + "/healthz")
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "/v1/jobs", headers=AUTH, json={
                    "name": "through-outage", "backend": "runai", "image": "x",
                    "env": {"SIM_OUTCOME": "hang"}}) as r:
                job = await r.json()

            async def running() -> bool:
                return (await get_all(url))[job["id"]]["status"]["phase"] == "RUNNING"

            assert await eventually(running, within=20)
            before = (await get_all(url))[job["id"]]
            runai_sim = sims.procs[0].p
            assert runai_sim is not None
            os.kill(runai_sim.pid, signal.SIGSTOP)  # the vendor hangs: no answers, no errors
            frozen_at = time.monotonic()
            frozen_wall = time.time()
            try:
                async def noticed() -> bool:
                    return bool((await get_all(url))[job["id"]]["status"].get("stale"))

                assert await eventually(noticed, within=30)  # the outage is seen, then it lasts its length
                await asyncio.sleep(max(0.0, outage - (time.monotonic() - frozen_at)))
                t0 = time.monotonic()
                during = (await get_all(url))[job["id"]]
                read_ms = (time.monotonic() - t0) * 1000
                async with s.get(f"{url}/v1/jobs/{job['id']}", headers=AUTH) as r:
                    assert r.status == 200  # reads are served from the store
            finally:
                thawed_wall = time.time()
                os.kill(runai_sim.pid, signal.SIGCONT)
            assert during["status"]["stale"] is True
            assert during["status"]["phase"] == before["status"]["phase"] == "RUNNING"
            assert during["status"]["observed_at"] == before["status"]["observed_at"]

            async def fresh() -> bool:
                return (await get_all(url))[job["id"]]["status"]["stale"] is False

            assert await eventually(fresh, within=30), "did not recover after the outage"
            recovered_s = time.monotonic() - frozen_at - outage
            hist = (await histories(url, [job["id"]]))[job["id"]]
            assert hist[-1]["to_phase"] == "RUNNING"
            from datetime import datetime

            during_outage = [e for e in hist
                             if frozen_wall <= datetime.fromisoformat(e["at"]).timestamp() <= thawed_wall]
            assert during_outage == [], f"phase changed during the outage: {during_outage}"
        log = (tmp_path / "gw.log").read_text()
        assert log.count('"sync_failed"') == 1 and log.count('"sync_recovered"') == 1
        record_figures("outage", outage_seconds=outage, read_ms_during_outage=round(read_ms, 1),
                       phase_changes_during_outage=0, recovered_within_s=round(recovered_s, 1))
    finally:
        gw.stop()
        sims.stop()
