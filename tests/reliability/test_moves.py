"""Rebalance while waiting, with real processes: jobs waiting on a full Run:ai move to ModelArts while the
gateway is SIGKILLed again and again (SQLite), or while three replicas share PostgreSQL and one is killed;
counted through both simulators' own list APIs: one target per job, no source left on Run:ai."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import eventually, free_port, record_figures
from tests.procs import Proc, Simulators, start_replicas, wait_http, write_config

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
AUTH = {"Authorization": "Bearer alpha-key-123"}
FAST = {"sync_interval": 0.3, "capacity_interval": 0.3}


async def call(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, url + path, json=body, headers=AUTH) as r:
        return r.status, await r.json(content_type=None)


def waiter(i: int) -> dict[str, Any]:
    return {"name": f"waiter-{i}", "backend": "runai", "image": "python:3.11", "placement": {"max_wait": 0.5},
            "env": {"SIM_RUN_SECONDS": "4"}, "resources": {"gpus": 1, "gpu_type": "A100"}}


async def moved_everywhere(url: str, ids: list[str]) -> bool:
    for job_id in ids:
        status, row = await call(url, "GET", f"/v1/jobs/{job_id}")
        if status != 200 or not row["migrated_to"] or row["status"]["phase"] != "CANCELLED":
            return False
    return True


async def check_once(url: str, sims: Simulators, ids: list[str], n: int) -> dict[str, int]:
    """One target per job on ModelArts, nothing of them left on Run:ai; figures for the report."""
    names = await sims.vendor_names()
    on_ma = Counter(name.rsplit("-", 1)[0] for name in names["modelarts"] if name.startswith("waiter-"))
    on_runai = [name for name in names["runai"] if name.startswith("waiter-")]
    assert sorted(on_ma) == sorted(f"waiter-{i}" for i in range(n)), on_ma
    dups = {k: v for k, v in on_ma.items() if v > 1}
    assert not dups, f"more than one target: {dups}"
    assert not on_runai, f"sources left on Run:ai: {on_runai}"
    targets = set()
    for job_id in ids:
        _, row = await call(url, "GET", f"/v1/jobs/{job_id}")
        targets.add(row["migrated_to"])
        _, target = await call(url, "GET", f"/v1/jobs/{row['migrated_to']}")
        assert target["migrated_from"] == job_id and target["placement"]["moves"] == 1
    assert len(targets) == n
    return {"jobs": n, "targets": len(targets), "duplicates": 0, "orphans": 0}


async def test_moves_survive_sigkills_on_sqlite(tmp_path: Path, long_mode: bool) -> None:
    n, kills = (24, 6) if long_mode else (8, 3)
    sims = await Simulators(tmp_path, speed=20.0, runai_args=("--gpus", "a100=1"),
                            ma_args=("--gpus", f"modelarts.vm.gpu.a100.1={n}")).start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = write_config(tmp_path / "gw.yaml", f"sqlite+aiosqlite:///{tmp_path}/tjg.db", sims.runai_port,
                       sims.ma_port, port, backend_extra=FAST)
    gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log").start()
    try:
        await wait_http(url + "/healthz")
        status, hog = await call(url, "POST", "/v1/jobs", {**waiter(999), "name": "hog", "placement": None,
                                                           "env": {"SIM_OUTCOME": "hang"}})
        assert status == 201, hog
        ids = []
        for i in range(n):
            status, made = await call(url, "POST", "/v1/jobs", waiter(i))
            assert status == 201, made
            ids.append(made["id"])
        rng = random.Random(7)
        for _ in range(kills):  # killed while the moves are under way, and started again
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            gw.kill()
            gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log").start()
            await wait_http(url + "/healthz")
        assert await eventually(lambda: moved_everywhere(url, ids), within=120, step=0.5), "not every job moved"
        figures = await check_once(url, sims, ids, n)
        record_figures("moves under SIGKILL", sigkills=kills, **figures)
    finally:
        gw.kill()
        sims.stop()


async def test_moves_with_three_replicas_on_postgres(tmp_path: Path) -> None:
    from tests.conftest import fresh_pg_database, require_postgres

    db_url, drop = await fresh_pg_database(require_postgres())
    n = 8
    sims = await Simulators(tmp_path, speed=20.0, runai_args=("--gpus", "a100=1"),
                            ma_args=("--gpus", f"modelarts.vm.gpu.a100.1={n}")).start()
    procs: list[Proc] = []
    try:
        procs, urls = await start_replicas(tmp_path, db_url, sims, 3, FAST)
        status, hog = await call(urls[0], "POST", "/v1/jobs", {**waiter(999), "name": "hog", "placement": None,
                                                               "env": {"SIM_OUTCOME": "hang"}})
        assert status == 201, hog
        ids = []
        for i in range(n):  # spread over the replicas
            status, made = await call(urls[i % 3], "POST", "/v1/jobs", waiter(i))
            assert status == 201, made
            ids.append(made["id"])
        await asyncio.sleep(0.8)
        procs[0].kill()  # one replica dies while the moves are under way; the others go on
        assert await eventually(lambda: moved_everywhere(urls[1], ids), within=120, step=0.5), "not every job moved"
        figures = await check_once(urls[2], sims, ids, n)
        record_figures("moves with three PostgreSQL replicas", replicas=3, killed=1, **figures)
    finally:
        for p in procs:
            p.kill()
        sims.stop()
        await drop()
