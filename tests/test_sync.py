"""Status sync: list-based cost, stale on failure, external jobs, watch streams, webhooks, leases."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

import adapters.registry  # noqa: F401  (registers the vendors)
from gateway.api.http import SYNCS
from gateway.background.sync import BackendSync
from gateway.background.webhooks import verify_signature
from gateway.core.adapter import REGISTRY
from gateway.core.models import JobStatus, Phase
from gateway.store import Store
from simulators.modelarts.app import SIM_KEY as MA_KEY
from simulators.runai.app import SIM_KEY as RUNAI_KEY
from tests.conftest import (
    CLUSTER,
    PROJECT,
    base_config,
    eventually,
    free_port,
    gateway_config,
    start_loop_sim,
)
from tests.gwkit import ALPHA, BETA, GW, OPS, spec, start_gateway


def _sim_phase(sim: Any, vendor: str, vendor_id: str) -> str:
    """A simulated job's phase now, as its simulator computes it."""
    if vendor == "runai":
        return str(sim.phase(sim.jobs[vendor_id]))
    return str(sim.state(sim.jobs[vendor_id])[0])


async def seed_store(store: Store, backend: str, vendor_ids: list[str], kind: str = "training") -> None:
    """Rows for jobs the gateway submitted earlier (bulk, for scale tests)."""
    now = time.time()
    status = JobStatus(phase=Phase.QUEUED).model_dump(mode="json")
    rows = [{"id": f"{i:032x}", "tenant": "alpha", "name": f"bulk-{i}", "backend": backend, "project": "1",
             "vendor_name": f"bulk-{i}", "vendor_kind": kind, "backend_job_id": vid, "spec": {}, "report": [],
             "labels": {}, "phase": "QUEUED", "terminal": False, "status": status, "origin": "gateway",
             "submit_state": "submitted", "submit_error": None, "cancel_requested": False, "created_at": now,
             "updated_at": now, "deleted_at": None, "migrated_from": None, "migrated_to": None}
            for i, vid in enumerate(vendor_ids)]
    await store.jobs.insert_rows(rows)


@pytest.mark.parametrize(("vendor", "page"), [("runai", 500), ("modelarts", 50)])
async def test_one_cycle_over_2000_jobs_costs_about_one_request_per_page(tmp_path: Path, vendor: str,
                                                                         page: int) -> None:
    sim = await start_loop_sim(vendor, speed=50.0)
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    await store.migrate()
    try:
        if vendor == "runai":
            ids = sim.app[RUNAI_KEY].bulk_create(2000, project="1", cluster=CLUSTER)
        else:
            ids = sim.app[MA_KEY].bulk_create(2000, project=PROJECT)
        await seed_store(store, vendor, ids)
        fake = sim.app[RUNAI_KEY] if vendor == "runai" else sim.app[MA_KEY]

        async def all_running() -> bool:  # at speed 50 they soon are
            return all(_sim_phase(fake, vendor, i) == "Running" for i in ids)

        assert await eventually(all_running, within=30)
        cfg = base_config(runai_url=sim.url, ma_url=sim.url)
        async with aiohttp.ClientSession() as s:
            sync = BackendSync(REGISTRY.create(cfg.backend(vendor), s), store, page_size=page)
            async with s.delete(sim.url + "/_sim/stats"):
                pass
            stats = await sync.cycle()
            async with s.get(sim.url + "/_sim/stats") as r:
                served = (await r.json())["total"]
        assert stats.updated == 2000 and stats.get_requests == 0
        assert served <= math.ceil(2000 / page) + 5, served
        live = await store.jobs.live(vendor)
        assert {r["phase"] for r in live} == {"RUNNING"}
    finally:
        await store.close()
        await sim.runner.cleanup()


async def test_outage_marks_stale_changes_nothing_and_recovers(tmp_path: Path) -> None:
    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/t.db",
                         backend_extra={"retry": {"attempts": 2, "base_delay": 0.01, "max_delay": 0.02},
                                        "sync_interval": 0.2, "breaker_threshold": 1000})
    gw = await start_gateway(cfg)
    try:
        job = await gw.submit(spec("runai", "steady", env={"SIM_OUTCOME": "hang"}))
        running = await gw.wait_phase(job["id"], {"RUNNING"})
        url = cfg.backend("runai").url
        with capture_logs() as logs:
            async with aiohttp.ClientSession() as s:
                async with s.put(url + "/_sim/faults", json={"http503": 1.0}):
                    pass

                async def stale(want: bool) -> Any:
                    _, got = await gw.call("GET", f"/v1/jobs/{job['id']}")
                    return got if got["status"]["stale"] is want else None

                during = await eventually(lambda: stale(True), within=30)
                assert during, "the outage was never noticed"
                async with s.put(url + "/_sim/faults", json={}):
                    pass
            after = await eventually(lambda: stale(False), within=30)
        assert after, "never recovered"
        assert during["status"]["stale"] is True
        assert during["status"]["phase"] == "RUNNING"
        assert during["status"]["observed_at"] == running["status"]["observed_at"]
        assert after["status"]["stale"] is False and after["status"]["phase"] == "RUNNING"
        events = [e["event"] for e in logs if e.get("backend") == "runai"]
        assert events.count("sync_failed") == 1 and events.count("sync_recovered") == 1
        _, evs = await gw.call("GET", f"/v1/jobs/{job['id']}/events?vendor=false")
        # Phase transitions only: a sync that saw the vendor's Pending between Creating and Running adds a
        # change event (same phase, new vendor phase), which depends on when its cycles fell.
        assert [e["to_phase"] for e in evs["events"] if e["kind"] == "transition"] == ["QUEUED", "RUNNING"]
    finally:
        await gw.c.close()


async def test_external_runai_job_shows_up_in_the_unified_list(tmp_path: Path) -> None:
    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/e.db", backend_extra={"adopt_external": True,
                                                                               "sync_interval": 0.5},
                         tenant_extra={"beta": {"projects": ["1"]}})
    gw = await start_gateway(cfg)
    try:
        mine = await gw.submit(spec("runai", "ours", env={"SIM_OUTCOME": "hang"}))
        url = cfg.backend("runai").url

        def runapy_create() -> str:
            from runai import models
            from runai.api_client import ApiClient
            from runai.configuration import Configuration
            from runai.runai_client import RunaiClient

            conf = Configuration(client_id="tjg-demo", client_secret="runai-secret-xyz", runai_base_url=url)
            client = RunaiClient(ApiClient(conf))
            req = models.TrainingCreationRequest(name="made-by-hand", project_id="1", cluster_id=CLUSTER,
                                                 spec=models.TrainingSpecSpec(
                                                     image="python:3.11", command="sleep", args="1000",
                                                     environment_variables=[models.EnvironmentVariable(
                                                         name="SIM_OUTCOME", value="hang")]))
            return str(client.workloads.trainings.create_training1(training_creation_request=req)
                       .data["workloadId"])

        vendor_id = await asyncio.to_thread(runapy_create)

        async def imported() -> Any:
            _, page = await gw.call("GET", "/v1/jobs", headers=OPS)
            return page if any(j["origin"] == "external" for j in page["jobs"]) else None

        page = await eventually(imported, within=30)
        assert page, "the external job was never imported"
        ext = [j for j in page["jobs"] if j["origin"] == "external"]
        assert [j["backend_job_id"] for j in ext] == [vendor_id]
        assert ext[0]["name"] == "made-by-hand" and ext[0]["spec"]["command"] == ["sleep"]
        assert ext[0]["status"]["phase"] in ("QUEUED", "STARTING", "RUNNING")
        assert len([j for j in page["jobs"] if j["origin"] == "gateway"]) == 1  # ours is not re-imported
        _, beta = await gw.call("GET", "/v1/jobs", headers=BETA)  # beta is mapped to project 1
        assert [j["id"] for j in beta["jobs"]] == [ext[0]["id"]]
        _, alpha = await gw.call("GET", "/v1/jobs", headers=ALPHA)
        assert [j["id"] for j in alpha["jobs"]] == [mine["id"]]
    finally:
        await gw.c.close()


async def read_sse(resp: aiohttp.ClientResponse, until_event: str | None = None, limit: int = 50,
                   within: float = 15) -> list[tuple[str, Any]]:
    from gateway.client import iter_sse

    out: list[tuple[str, Any]] = []

    async def pump() -> None:
        async for event, data in iter_sse(resp.content):
            out.append((event, data))
            if event == until_event or len(out) >= limit:
                return

    await asyncio.wait_for(pump(), within)
    return out


async def test_watch_streams(gw: GW) -> None:
    async with gw.c.get("/v1/events", headers=BETA) as beta_stream, gw.c.get("/v1/events",
                                                                             headers=ALPHA) as alpha_stream:
        job = await gw.submit(spec("modelarts", "watched", env={"SIM_RUN_SECONDS": "1"}))
        async with gw.c.get(f"/v1/jobs/{job['id']}/events?watch=true", headers=ALPHA) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = await read_sse(r, until_event="end")
        assert events[-1] == ("end", {"id": job["id"], "phase": "SUCCEEDED"})
        phases = [d["to_phase"] for e, d in events if e == "transition"]
        assert phases[0] == "QUEUED" and phases[-1] == "SUCCEEDED"
        mine = await read_sse(alpha_stream, limit=len(phases))
        assert [d["to_phase"] for _, d in mine] == phases
        assert {d["job_id"] for _, d in mine} == {job["id"]}
        with pytest.raises(asyncio.TimeoutError):
            await read_sse(beta_stream, limit=1, within=0.5)  # beta sees none of alpha's jobs
    status, _ = await gw.call("GET", "/v1/jobs/0123456789abcdef0123456789abcdef/events?watch=true")
    assert status == 404


class Receiver:
    """A webhook endpoint that records deliveries and can fail the first few."""

    def __init__(self, fail_first: int = 0) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503)
        self.got.append((dict(request.headers), body))
        return web.Response(status=204)

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


async def test_webhooks_signed_once_per_transition_with_retries(tmp_path: Path) -> None:
    rx = Receiver(fail_first=2)
    runner = await rx.start()
    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/w.db",
                         tenant_extra={"alpha": {"webhooks": [{"url": rx.url, "secret": "hook-secret-1"}]}})
    gw = await start_gateway(cfg)
    try:
        job = await gw.submit(spec("runai", "hooked", env={"SIM_RUN_SECONDS": "0.5"}))
        await gw.wait_phase(job["id"], {"SUCCEEDED"})
        _, evs = await gw.call("GET", f"/v1/jobs/{job['id']}/events?vendor=false")
        want = [f"{job['id']}:{e['seq']}" for e in evs["events"]]
        async def all_delivered() -> bool:
            return len({h["X-TJG-Event-Id"] for h, _ in rx.got}) >= len(want)

        await eventually(all_delivered)
        ids = [h["X-TJG-Event-Id"] for h, _ in rx.got]
        assert sorted(set(ids)) == sorted(want)
        for headers, body in rx.got:
            assert verify_signature("hook-secret-1", headers["X-TJG-Timestamp"], body, headers["X-TJG-Signature"])
            payload = json.loads(body)
            assert payload["event_id"] == headers["X-TJG-Event-Id"] and payload["job_id"] == job["id"]
        dups = [i for i in ids if ids.count(i) > 1]
        assert not dups
        retried = [h for h, _ in rx.got if h["X-TJG-Redelivery"] == "true"]
        assert retried, "the first deliveries failed, so later ones are redeliveries"
        assert all(int(h["X-TJG-Delivery-Attempt"]) > 1 for h in retried)
        assert not verify_signature("wrong", rx.got[0][0]["X-TJG-Timestamp"], rx.got[0][1],
                                    rx.got[0][0]["X-TJG-Signature"])
        assert "hook-secret-1" not in json.dumps([h for h, _ in rx.got])
    finally:
        await gw.c.close()
        await runner.cleanup()


async def test_leases_move_to_another_owner_when_one_expires(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/l.db")
    await store.migrate()
    try:
        assert await store.leases.acquire("sync:x", "a", 0.3)
        assert not await store.leases.acquire("sync:x", "b", 0.3)
        assert await store.leases.acquire("sync:x", "a", 0.3)  # renewal
        renewed = time.monotonic()
        assert await eventually(lambda: store.leases.acquire("sync:x", "b", 0.3), within=10, step=0.02)
        assert time.monotonic() - renewed >= 0.25  # not before a's lease ran out
        assert not await store.leases.acquire("sync:x", "a", 0.3)
        await store.leases.release("sync:x", "b")
        assert await store.leases.acquire("sync:x", "a", 0.3)
    finally:
        await store.close()


async def test_backends_show_sync_state(gw: GW) -> None:
    await gw.submit(spec("runai", "s1", env={"SIM_OUTCOME": "hang"}))

    async def synced() -> Any:
        _, backends = await gw.call("GET", "/v1/backends")
        runai = next(b for b in backends if b["name"] == "runai")
        return runai if runai["sync"]["last_ok"] is not None else None

    runai = await eventually(synced, within=30)
    assert runai, "no sync cycle ended"
    assert runai["sync"]["failing"] is False and runai["sync"]["last_ok"] is not None
    assert gw.c.server.app is not None and "runai" in gw.c.server.app[SYNCS]


async def test_the_busy_check_after_each_cycle_reads_an_index_not_every_live_job(tmp_path: Path) -> None:
    from sqlalchemy import event

    store = Store(f"sqlite+aiosqlite:///{tmp_path}/b.db")
    await store.migrate()
    try:
        await seed_store(store, "runai", [f"w-{i}" for i in range(50)])
        assert store.db.sync_engine is not None
        sent: list[tuple[str, Any]] = []
        record = lambda conn, cursor, sql, params, ctx, many: sent.append((sql, params))  # noqa: E731
        event.listen(store.db.sync_engine, "before_cursor_execute", record)
        assert await store.jobs.busy("runai", ["QUEUED", "STARTING"]) is True
        assert await store.jobs.busy("runai", ["CANCELLING"]) is False
        event.remove(store.db.sync_engine, "before_cursor_execute", record)
        sql, params = sent[-1]
        with store.db.sync_engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
            assert "ix_jobs_backend_phase" in plan, plan
    finally:
        await store.close()
