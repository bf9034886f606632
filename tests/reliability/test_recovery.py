"""Managed recovery with real processes: the gateway SIGKILLed at each step of a recovery (SQLite), three
replicas sharing PostgreSQL with one killed and cancels arriving between attempts, and a soak of jobs under
random preemptions and node failures on both vendors. Every attempt is counted through both simulators' own
list APIs: each exactly once, none after a cancel, no job lost."""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import eventually, free_port, record_figures
from tests.procs import Proc, Simulators, listed_jobs, start_replicas, wait_http, write_config

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
AUTH = {"Authorization": "Bearer alpha-key-123"}
FAST = {"sync_interval": 0.3, "capacity_interval": 0.3}
STEPS = ("attempt-recovering", "attempt-stored", "create-sent")
ATTEMPT = re.compile(r"^(?P<job>.+?)(-a(?P<n>[0-9]+))?-[0-9a-f]{8}$")


async def call(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, url + path, json=body, headers=AUTH) as r:
        return r.status, await r.json(content_type=None)


def flaky(name: str, backend: str, outcomes: str, failover: bool = False, most: int = 3,
          seconds: int = 4) -> dict[str, Any]:
    return {"name": name, "backend": backend, "image": "python:3.11", "resources": {"gpus": 1, "gpu_type": "A100"},
            "env": {"SIM_OUTCOME": outcomes, "SIM_RUN_SECONDS": str(seconds)},
            "retry": {"on": ["node-failure", "oom", "preempted"], "max_attempts": most, "failover": failover}}


async def attempts_on_vendors(sims: Simulators, prefix: str) -> Counter[tuple[str, int]]:
    """(job name, attempt) -> how many vendor jobs both simulators list for it."""
    names = await sims.vendor_names()
    seen: Counter[tuple[str, int]] = Counter()
    for name in names["runai"] + names["modelarts"]:
        m = ATTEMPT.match(name)
        if m and name.startswith(prefix):
            seen[(m["job"], int(m["n"] or 1))] += 1
    return seen


async def all_ended(url: str, ids: list[str]) -> bool:
    for job_id in ids:
        status, row = await call(url, "GET", f"/v1/jobs/{job_id}")
        if status != 200 or not row["status"]["terminal"]:
            return False
    return True


async def check_exactly_once(url: str, sims: Simulators, jobs: dict[str, str], prefix: str,
                             cancelled: frozenset[str] = frozenset()) -> dict[str, int]:
    """Each job's attempts as the gateway records them are on the vendors once each, and nothing else is
    (but the last attempt of a job in `cancelled` on Run:ai, which a cancel deletes there)."""
    seen = await attempts_on_vendors(sims, prefix)
    dups = {k: v for k, v in seen.items() if v > 1}
    assert not dups, f"an attempt made twice: {dups}"
    expected: set[tuple[str, int]] = set()
    attempts_of: dict[str, int] = {}
    for name, job_id in jobs.items():
        _, row = await call(url, "GET", f"/v1/jobs/{job_id}")
        assert len(row["attempts"]) == row["attempt"], row["attempts"]
        attempts_of[name] = row["attempt"]
        expected |= {(name, a["n"]) for a in row["attempts"] if a["backend_job_id"]
                     and not (name in cancelled and a["backend"] == "runai" and a["n"] == row["attempt"])}
        for a in row["attempts"][:-1]:  # every ended attempt says how
            assert a["phase"] and a["reason"], (name, a)
    missing = expected - set(seen)
    extra = {k for k in set(seen) - expected if not (k[0] in cancelled and k[1] == attempts_of[k[0]])}
    assert not missing, f"attempts the gateway recorded that no vendor has: {sorted(missing)}"
    assert not extra, f"vendor jobs the gateway does not know: {sorted(extra)}"
    return {"jobs": len(jobs), "attempts": len(expected), "duplicates": 0, "lost": 0}


async def test_every_attempt_once_under_sigkills_at_each_step(tmp_path: Path, long_mode: bool) -> None:
    n = 18 if long_mode else 4
    sims = await Simulators(tmp_path, speed=20.0).start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    crashes = tmp_path / "crashes.log"
    odds = "0.3" if long_mode else "once"  # (once: each step surely, the first time the run reaches it)
    env = {"TJG_CRASH_AT": ",".join(f"{s}:{odds}" for s in STEPS), "TJG_CRASH_LOG": str(crashes)}
    cfg = write_config(tmp_path / "gw.yaml", f"sqlite+aiosqlite:///{tmp_path}/tjg.db", sims.runai_port,
                       sims.ma_port, port, backend_extra=FAST)
    gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log", env=env).start()
    try:
        await wait_http(url + "/healthz")
        jobs: dict[str, str] = {}
        for i in range(n):
            name = f"rk-{i}"
            spec = flaky(name, ("runai", "modelarts")[i % 2], "node-failure,oom,completed", failover=i % 3 == 0)
            for _ in range(50):  # the gateway may be down (crashed at a step): the client retries, same key
                try:
                    async with aiohttp.ClientSession() as s, s.post(url + "/v1/jobs", json=spec, headers={
                            **AUTH, "Idempotency-Key": name}) as r:
                        if r.status == 201:
                            jobs[name] = (await r.json())["id"]
                            break
                except aiohttp.ClientError:
                    pass
                if gw.p is not None and gw.p.poll() is not None:
                    gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log", env=env).start()
                await asyncio.sleep(0.2)
        assert len(jobs) == n

        async def done() -> bool:
            nonlocal gw
            if gw.p is not None and gw.p.poll() is not None:  # crashed at a step: started again
                gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log", env=env).start()
                try:
                    await wait_http(url + "/healthz", within=20)
                except aiohttp.ClientError:
                    return False
            try:
                return await all_ended(url, list(jobs.values()))
            except aiohttp.ClientError:
                return False
        assert await eventually(done, within=240, step=0.3), "not every job ended"
        gw.kill()  # counted with no crash point armed
        gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log").start()
        await wait_http(url + "/healthz")
        kills = Counter(crashes.read_text().split()) if crashes.exists() else Counter()
        assert all(kills[s] >= 1 for s in STEPS), f"a step was never crashed at: {kills}"
        figures = await check_exactly_once(url, sims, jobs, "rk-")
        for name, job_id in jobs.items():
            _, row = await call(url, "GET", f"/v1/jobs/{job_id}")
            assert row["status"]["phase"] == "SUCCEEDED" and row["attempt"] == 3, (name, row["status"])
        record_figures("recovery under SIGKILL at each step", sigkills=sum(kills.values()),
                       **{f"killed at {s}": kills[s] for s in STEPS}, **figures)
    finally:
        gw.kill()
        sims.stop()


async def test_three_replicas_on_postgres_make_each_attempt_once_and_a_cancel_stops_recovery(
        tmp_path: Path) -> None:
    from tests.conftest import fresh_pg_database, require_postgres

    db_url, drop = await fresh_pg_database(require_postgres())
    n = 9
    sims = await Simulators(tmp_path, speed=20.0).start()
    procs: list[Proc] = []
    try:
        procs, urls = await start_replicas(tmp_path, db_url, sims, 3, FAST)
        jobs: dict[str, str] = {}
        stop: dict[str, str] = {}  # cancelled while they recover: fail forever otherwise
        for i in range(n):
            name = f"rp-{i}"
            backend = ("runai", "modelarts")[i % 2]
            spec = flaky(name, backend, "node-failure,node-failure,completed", failover=i % 4 == 0) if i % 3 \
                else flaky(name, backend, "node-failure", most=50)
            status, made = await call(urls[i % 3], "POST", "/v1/jobs", spec)
            assert status == 201, made
            (jobs if i % 3 else stop)[name] = made["id"]
        await asyncio.sleep(0.6)
        procs[0].kill()  # one replica dies while recoveries are under way; the others go on

        async def recovering(job_id: str) -> bool:
            _, row = await call(urls[1], "GET", f"/v1/jobs/{job_id}")
            return bool(row["attempt"] >= 2)
        for job_id in stop.values():  # a cancel once it has failed at least once
            assert await eventually(lambda j=job_id: recovering(j), within=60, step=0.2)
            status, _ = await call(urls[2], "POST", f"/v1/jobs/{job_id}/cancel")
            assert status in (200, 202)
        everyone = {**jobs, **stop}
        assert await eventually(lambda: all_ended(urls[1], list(everyone.values())), within=180, step=0.5)
        figures = await check_exactly_once(urls[2], sims, everyone, "rp-", cancelled=frozenset(stop))
        # Nothing of a cancelled job runs on either vendor, and no attempt was made after its cancel.
        for job_id in stop.values():
            _, row = await call(urls[1], "GET", f"/v1/jobs/{job_id}")
            st = row["status"]  # (an attempt that failed before the cancel reached it ends FAILED, and says so)
            assert st["phase"] == "CANCELLED" or (st["phase"], st["retry_outcome"]) == ("FAILED", "cancelled"), st
        # Nothing of them runs on either vendor; a while later no attempt has appeared.
        seen_before = await attempts_on_vendors(sims, "rp-")
        assert await eventually(lambda: nothing_live(sims, "rp-"), within=30), await live_on_vendors(sims, "rp-")
        await asyncio.sleep(3)  # (several passes of the recovery loop: a late attempt would show here)
        assert await attempts_on_vendors(sims, "rp-") == seen_before
        record_figures("recovery with three PostgreSQL replicas", replicas=3, killed=1, cancelled=len(stop),
                       **figures)
    finally:
        for p in procs:
            p.kill()
        sims.stop()
        await drop()


async def nothing_live(sims: Simulators, prefix: str) -> bool:
    return not await live_on_vendors(sims, prefix)


async def live_on_vendors(sims: Simulators, prefix: str) -> list[str]:
    """Names of vendor jobs of `prefix` that have not ended."""
    from gateway.core.adapter import REGISTRY
    from tests.conftest import base_config

    cfg = base_config(runai_url=f"http://127.0.0.1:{sims.runai_port}", ma_url=f"http://127.0.0.1:{sims.ma_port}")
    out = []
    async with aiohttp.ClientSession() as s:
        for backend in ("runai", "modelarts"):
            out += [j.handle.vendor_name for j in await listed_jobs(REGISTRY.create(cfg.backend(backend), s))
                    if j.handle.vendor_name.startswith(prefix) and not j.status.terminal]
    return out


async def test_recovery_soak_under_random_preemptions_and_node_failures(tmp_path: Path, long_mode: bool) -> None:
    n = 100
    rng = random.Random(28)
    sims = await Simulators(tmp_path, speed=40.0).start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = write_config(tmp_path / "gw.yaml", f"sqlite+aiosqlite:///{tmp_path}/tjg.db", sims.runai_port,
                       sims.ma_port, port, backend_extra=FAST)
    gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log").start()
    preempted = 0
    try:
        await wait_http(url + "/healthz")
        jobs: dict[str, str] = {}
        for i in range(n):
            name = f"soak-{i}"
            outcomes = ",".join(rng.choice(["completed", "node-failure", "completed", "oom"]) for _ in range(3))
            spec = flaky(name, ("runai", "modelarts")[i % 2], outcomes + ",completed", failover=i % 2 == 1, most=4,
                         seconds=80)
            status, made = await call(url, "POST", "/v1/jobs", spec)
            assert status == 201, made
            jobs[name] = made["id"]

        chaos_until = asyncio.get_running_loop().time() + (20.0 if long_mode else 10.0)

        async def settled() -> bool:
            nonlocal preempted
            if asyncio.get_running_loop().time() > chaos_until:  # preemptions stop: every job must end now
                return await all_ended(url, list(jobs.values()))
            running = []
            for job_id in rng.sample(list(jobs.values()), 20):
                _, row = await call(url, "GET", f"/v1/jobs/{job_id}")
                if row["status"]["phase"] == "RUNNING" and row["backend_job_id"]:
                    running.append(row)
            for row in running[:3]:  # random preemptions on whichever vendor runs them
                port_ = sims.runai_port if row["backend"] == "runai" else sims.ma_port
                async with aiohttp.ClientSession() as s, \
                        s.post(f"http://127.0.0.1:{port_}/_sim/preempt/{row['backend_job_id']}") as r:
                    preempted += r.status == 200
            return await all_ended(url, list(jobs.values()))
        assert await eventually(settled, within=300 if long_mode else 180, step=0.2), "not every job ended"
        figures = await check_exactly_once(url, sims, jobs, "soak-")
        phases: Counter[str] = Counter()
        for name, job_id in jobs.items():
            _, row = await call(url, "GET", f"/v1/jobs/{job_id}")
            st = row["status"]
            phases[st["phase"]] += 1
            assert st["terminal"] and st["phase"] in ("SUCCEEDED", "FAILED"), (name, st)
            if st["phase"] == "FAILED":  # ended with a reason and the rule that stopped it
                assert st["reason"] and st["retry_outcome"], (name, st)
        assert preempted > 0
        record_figures("recovery soak", preemptions=preempted, succeeded=phases["SUCCEEDED"],
                       failed=phases["FAILED"], **figures)
    finally:
        gw.kill()
        sims.stop()
