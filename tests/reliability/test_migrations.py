"""Migrations with real processes (issue 29): the gateway SIGKILLed in the middle of migrations with each
source action and the client retrying with the same key; migrate racing delete on two PostgreSQL replicas;
creates whose answer is lost, with every project-id form Run:ai makes. Counted through both simulators' own
list APIs: one target per source, no source left running where the action says cancel, no orphan."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.core.adapter import REGISTRY
from tests.conftest import base_config, eventually, free_port, record_figures
from tests.procs import Proc, Simulators, listed_jobs, start_replicas, wait_http, write_config

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
AUTH = {"Authorization": "Bearer alpha-key-123"}
FAST = {"sync_interval": 0.3, "capacity_interval": 0.3}
BASE = re.compile(r"^(?P<name>.+)-[0-9a-f]{8}$")


async def call(url: str, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    async with aiohttp.ClientSession() as s, s.request(method, url + path, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def vendor_jobs(sims: Simulators) -> dict[str, list[tuple[str, str, bool]]]:
    """(base name, vendor phase, ended) of every job on each vendor, through its own list API."""
    cfg = base_config(runai_url=f"http://127.0.0.1:{sims.runai_port}", ma_url=f"http://127.0.0.1:{sims.ma_port}")
    out: dict[str, list[tuple[str, str, bool]]] = {}
    async with aiohttp.ClientSession() as s:
        for backend in ("runai", "modelarts"):
            got = []
            for j in await listed_jobs(REGISTRY.create(cfg.backend(backend), s)):
                m = BASE.match(j.handle.vendor_name)
                got.append((m["name"] if m else j.handle.vendor_name, j.status.vendor_phase or "", j.status.terminal))
            out[backend] = got
    return out


class Restarting:
    """`tjg serve` that is started again whenever it has died (at a crash point)."""

    def __init__(self, cfg: Path, log: Path, env: dict[str, str]) -> None:
        self.cfg, self.log, self.env = cfg, log, env
        self.proc = Proc(["serve", "--config", str(cfg)], log, env=env).start()

    async def alive(self, url: str) -> None:
        if self.proc.p is not None and self.proc.p.poll() is not None:
            self.proc = Proc(["serve", "--config", str(self.cfg)], self.log, env=self.env).start()
        await wait_http(url + "/healthz", within=30)

    def kill(self) -> None:
        self.proc.kill()


@pytest.mark.parametrize("action", ["cancel", "suspend", "keep"])
async def test_sigkill_during_migrations_with_each_source_action(tmp_path: Path, action: str,
                                                                 long_mode: bool) -> None:
    n = 10 if long_mode else 3
    sims = await Simulators(tmp_path, speed=20.0).start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    crashes = tmp_path / "crashes.log"
    env = {"TJG_CRASH_AT": "migrate-target-stored:0.5,create-sent:once", "TJG_CRASH_LOG": str(crashes)}
    cfg = write_config(tmp_path / "gw.yaml", f"sqlite+aiosqlite:///{tmp_path}/tjg.db", sims.runai_port,
                       sims.ma_port, port, backend_extra=FAST)
    gw = Restarting(cfg, tmp_path / "gw.log", {})
    try:
        await gw.alive(url)
        sources = []
        for i in range(n):
            status, made = await call(url, "POST", "/v1/jobs", {
                "name": f"mig-{action}-{i}", "backend": "runai", "image": "python:3.11",
                "env": {"SIM_OUTCOME": "hang"}, "resources": {"gpus": 1, "gpu_type": "A100"}})
            assert status == 201, made
            sources.append(made["id"])

        async def running(job_id: str) -> bool:
            _, row = await call(url, "GET", f"/v1/jobs/{job_id}")
            return bool(row["status"]["phase"] == "RUNNING")
        for job_id in sources:
            assert await eventually(lambda j=job_id: running(j), within=60)
        gw.kill()
        gw = Restarting(cfg, tmp_path / "gw.log", env)  # from here it may die at each crash point
        targets = {}
        for i, job_id in enumerate(sources):
            key = f"move-{action}-{i}"
            for _ in range(60):  # the client's retries, same key, until it has an answer
                try:
                    await gw.alive(url)
                    status, moved = await call(url, "POST", f"/v1/jobs/{job_id}/migrate",
                                               {"backend": "modelarts", "source_action": action}, key=key)
                    if status == 201:
                        targets[job_id] = moved["id"]
                        break
                    assert status >= 500 or status == 503, (status, moved)
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        assert len(targets) == n
        gw.kill()
        gw = Restarting(cfg, tmp_path / "gw.log", {})  # recovery finishes what is owed; nothing crashes now
        await gw.alive(url)

        async def settled() -> bool:
            jobs = await vendor_jobs(sims)
            src = [j for j in jobs["runai"] if j[0].startswith(f"mig-{action}-")]
            live = [j for j in src if not j[2] and j[1] not in ("Suspended", "Suspending")]
            if action == "cancel":
                return not live
            if action == "suspend":
                return not [j for j in src if j[1] == "Running"]
            return len(live) == n
        assert await eventually(settled, within=90, step=0.5), await vendor_jobs(sims)
        jobs = await vendor_jobs(sims)
        on_ma = Counter(name for name, _, _ in jobs["modelarts"] if name.startswith(f"mig-{action}-"))
        assert sorted(on_ma) == sorted(f"mig-{action}-{i}" for i in range(n)), on_ma
        assert all(v == 1 for v in on_ma.values()), f"duplicate targets: {on_ma}"
        for job_id, target in targets.items():
            _, row = await call(url, "GET", f"/v1/jobs/{job_id}")
            assert row["migrated_to"] == target, row
        kills = Counter(crashes.read_text().split()) if crashes.exists() else Counter()
        record_figures(f"migrations under SIGKILL, source_action={action}", migrations=n,
                       sigkills=sum(kills.values()), duplicate_targets=0,
                       **({"sources_kept_running": n} if action == "keep" else {"sources_left_running": 0}))
    finally:
        gw.kill()
        sims.stop()


async def test_migrate_racing_delete_on_two_postgres_replicas(tmp_path: Path) -> None:
    from tests.conftest import fresh_pg_database, require_postgres

    db_url, drop = await fresh_pg_database(require_postgres())
    n = 8
    sims = await Simulators(tmp_path, speed=20.0).start()
    procs: list[Proc] = []
    try:
        procs, (a, b) = await start_replicas(tmp_path, db_url, sims, 2, FAST)
        outcomes: Counter[int] = Counter()
        made_targets = set()
        for i in range(n):
            status, src = await call(a, "POST", "/v1/jobs", {"name": f"race-{i}", "backend": "runai",
                                                             "image": "x", "env": {"SIM_OUTCOME": "hang"}})
            assert status == 201, src
            (m, moved), (d, _) = await asyncio.gather(
                call(b, "POST", f"/v1/jobs/{src['id']}/migrate", {"backend": "modelarts", "source_action": "cancel"}),
                call(a, "DELETE", f"/v1/jobs/{src['id']}"))
            assert d in (200, 202, 204)
            outcomes[m] += 1
            _, after = await call(a, "GET", f"/v1/jobs/{src['id']}")
            if m == 201:  # the truth: a target exists and is linked
                assert after["migrated_to"] == moved["id"], (after, moved)
                made_targets.add(f"race-{i}")
            else:
                assert m == 409 and after["migrated_to"] is None, (m, moved, after)
        jobs = await vendor_jobs(sims)
        on_ma = Counter(name for name, _, _ in jobs["modelarts"] if name.startswith("race-"))
        assert set(on_ma) == made_targets and all(v == 1 for v in on_ma.values()), (on_ma, made_targets)
        record_figures("migrate racing delete, two PostgreSQL replicas", races=n, migrated=outcomes[201],
                       refused=outcomes[409], targets_without_a_201=0)
    finally:
        for p in procs:
            p.kill()
        sims.stop()
        await drop()


async def test_lost_creates_with_every_project_id_form_are_found_not_doubled(tmp_path: Path) -> None:
    projects = ["1", "33", "4501", "575c19e8-c7c3-45b0-8290-2f47397a8383"]
    sims = await Simulators(tmp_path, speed=20.0, faults="drop_after_commit=0.6").start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = write_config(tmp_path / "gw.yaml", f"sqlite+aiosqlite:///{tmp_path}/tjg.db", sims.runai_port,
                       sims.ma_port, port, backend_extra=FAST)
    gw = Proc(["serve", "--config", str(cfg)], tmp_path / "gw.log").start()
    try:
        await wait_http(url + "/healthz")
        ids = {}
        for i in range(8):
            project = projects[i % len(projects)]
            status, made = await call(url, "POST", "/v1/jobs", {"name": f"lost-{i}", "backend": "runai",
                                                                "image": "x", "project": project,
                                                                "env": {"SIM_RUN_SECONDS": "2"}})
            assert status in (201, 202), made
            ids[f"lost-{i}"] = made["id"]

        async def confirmed() -> bool:
            for job_id in ids.values():
                _, row = await call(url, "GET", f"/v1/jobs/{job_id}")
                if not row["backend_job_id"]:
                    return False
            return True
        await sims.set_faults("")
        assert await eventually(confirmed, within=120, step=0.5), "a lost create was never settled"
        jobs = await vendor_jobs(sims)
        on_runai = Counter(name for name, _, _ in jobs["runai"] if name.startswith("lost-"))
        assert sorted(on_runai) == sorted(ids) and all(v == 1 for v in on_runai.values()), on_runai
        record_figures("lost creates across project-id forms", jobs=len(ids), forms=len(projects), duplicates=0,
                       orphans=0)
    finally:
        gw.kill()
        sims.stop()
