"""Statuses only move forward, on both stores: hypothesis interleaves sync cycles (pages read before and
after gateway actions), a vendor that changes on its own and lags behind the actions it accepted, and every
gateway action (cancel, suspend, resume, scale, delete). No recorded history may hold a step the transition
graph forbids, the job's row must agree with its history, and what the events stream (`/v1/events` reads
Events.since) and the webhook outbox carry must be exactly that history."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gateway.background.sync import BackendSync
from gateway.core.adapter import REGISTRY, VendorJob
from gateway.core.errors import GatewayError
from gateway.core.models import TERMINAL_PHASES
from gateway.core.transitions import allowed
from gateway.service.jobs import JobService
from gateway.service.principal import Principal
from gateway.store import Store
from gateway.store.schema import outbox
from tests.conftest import fresh_pg_database, postgres_url
from tests.fakes import VENDORS, fake_config

ALPHA = Principal("alpha")
HOOK = "http://hook.invalid/events"
_n = itertools.count()

ACTIONS = ("cancel", "suspend", "resume", "scale", "delete")
VENDOR_MOVES = ("running", "queued", "done", "failed", "suspended", "replicas")
Op = tuple[str, str | None]
ops = st.lists(st.one_of(
    st.tuples(st.just("sync"), st.none() | st.sampled_from(ACTIONS)),  # a cycle; an action lands mid-page
    st.tuples(st.just("action"), st.sampled_from(ACTIONS)),
    st.tuples(st.just("vendor"), st.sampled_from(VENDOR_MOVES)),
    st.tuples(st.just("tick"), st.none()),
), min_size=1, max_size=14)


class Scenario:
    """One store (SQLite file or PostgreSQL database), a fake vendor that lags, the service and the sync."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"fwd{next(_n)}"
        self.cfg = fake_config(url, self.name)
        self.vendor = VENDORS[self.name]
        self.vendor.lag = True
        self.migrated = False

    async def run(self, steps: list[Op], kind: str) -> None:
        store = Store(self.url, webhook_targets=lambda _tenant: [HOOK])
        if not self.migrated:
            await store.migrate()
            self.migrated = True
        adapter = REGISTRY.create(self.cfg.backend("fake"), None)  # type: ignore[arg-type]
        svc = JobService(self.cfg, store, {"fake": adapter})
        sync = BackendSync(adapter, store)
        try:
            spec: dict[str, Any] = {"name": "fwd", "backend": "fake", "image": "python:3.11", "kind": kind}
            if kind == "inference":
                spec["serving"] = {"port": 8080}
            job_id = (await svc.submit(ALPHA, spec)).job.id
            row = await store.jobs.get(job_id)
            assert row is not None
            vid = row["backend_job_id"]
            original = adapter.list_page

            for what, arg in steps:
                if what == "sync":
                    if arg is not None:
                        # The page is read, then the action lands, then the page is compared and written.
                        async def page_then_act(*a: Any, _act: str = arg, **kw: Any) -> tuple[list[VendorJob], bool]:
                            page = await original(*a, **kw)
                            await self.act(svc, job_id, _act)
                            return page

                        adapter.list_page = page_then_act  # type: ignore[method-assign]
                    try:
                        await sync.cycle()
                    finally:
                        adapter.list_page = original  # type: ignore[method-assign]
                elif what == "action":
                    assert arg is not None
                    await self.act(svc, job_id, arg)
                elif what == "vendor":
                    self.vendor_moves(vid, arg)
                else:
                    self.vendor.tick()
            await self.check(store, job_id)
        finally:
            await svc.close()
            await store.close()

    @staticmethod
    async def act(svc: JobService, job_id: str, what: str) -> None:
        try:
            if what == "scale":
                await svc.scale(ALPHA, job_id, 3)
            elif what == "delete":
                await svc.delete(ALPHA, job_id)
            else:
                await getattr(svc, what)(ALPHA, job_id)
        except GatewayError:
            pass  # not allowed now (a 409): the property is about what gets recorded

    def vendor_moves(self, vid: str, move: str | None) -> None:
        rec = self.vendor.jobs.get(vid)
        if rec is None or rec["phase"] in ("done", "failed", "stopped"):
            return
        if move == "replicas":
            rec["replicas"] = (rec.get("replicas") or 1) + 1  # a scale on the vendor's console
        else:
            rec["phase"] = move

    @staticmethod
    async def check(store: Store, job_id: str) -> None:
        history = await store.events.for_job(job_id)
        row = await store.jobs.get(job_id)
        assert row is not None
        assert [t["seq"] for t in history] == list(range(1, len(history) + 1))
        steps = [t for t in history if t["kind"] == "transition"]
        for before, after in itertools.pairwise(steps):
            assert before["to_phase"] == after["from_phase"], history
            assert before["to_phase"] not in TERMINAL_PHASES, history
            assert allowed(before["to_phase"], after["to_phase"], after["source"] == "gateway"), \
                (before["to_phase"], after["to_phase"], after["source"], history)
        for t in history:
            if t["kind"] == "change":  # a change event never moves the phase
                assert t["from_phase"] == t["to_phase"]
        assert row["phase"] == steps[-1]["to_phase"]
        # What /v1/events streams and what webhooks are owed: exactly the recorded history.
        streamed = [e for e in await store.events.since(0, None, limit=100_000) if e["job_id"] == job_id]
        key = [(t["seq"], t["kind"], t["from_phase"], t["to_phase"]) for t in history]
        assert [(e["seq"], e["kind"], e["from_phase"], e["to_phase"]) for e in streamed] == key
        payloads = await store.db.run(lambda conn: [r[0] for r in conn.execute(
            select(outbox.c.payload).where(outbox.c.url == HOOK).order_by(outbox.c.id))], write=False)
        owed = [(p["seq"], p["type"], p["from_phase"], p["to_phase"]) for p in payloads if p["job_id"] == job_id]
        assert owed == [(s, f"job.{k}", f, t) for s, k, f, t in key]


@given(steps=ops, kind=st.sampled_from(["training", "inference"]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_history_goes_backwards_on_sqlite(tmp_path: Path, steps: list[Op], kind: str) -> None:
    scenario = _SQLITE.setdefault(str(tmp_path), Scenario(f"sqlite+aiosqlite:///{tmp_path}/fwd.db"))
    asyncio.run(scenario.run(steps, kind))


_SQLITE: dict[str, Scenario] = {}


@pytest.fixture(scope="module")
def pg_scenario() -> Any:
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL tests need TJG_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    db_url, drop = asyncio.run(fresh_pg_database(url))
    yield Scenario(db_url)
    asyncio.run(drop())


@pytest.mark.postgres
@given(steps=ops, kind=st.sampled_from(["training", "inference"]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_history_goes_backwards_on_postgres(pg_scenario: Scenario, steps: list[Op], kind: str) -> None:
    asyncio.run(pg_scenario.run(steps, kind))


async def _cycle_with_action_mid_page(world: Any, act: Any) -> None:
    """One sync cycle whose page is read before `act` lands and compared after it."""
    original = world.sync.adapter.list_page

    async def page_then_act(*a: Any, **kw: Any) -> tuple[list[VendorJob], bool]:
        page = await original(*a, **kw)
        await act()
        return page

    world.sync.adapter.list_page = page_then_act
    try:
        await world.sync.cycle()
    finally:
        world.sync.adapter.list_page = original


async def test_a_page_read_before_a_scale_does_not_undo_it(world: Any) -> None:
    job_id = (await world.submit("serve", kind="inference", serving={"port": 8080})).job.id
    vid = (await world.row(job_id))["backend_job_id"]
    world.vendor.jobs[vid]["replicas"] = 2  # scaled on the vendor's console: the page will say 2
    # The same phase, so the graph allows the write: only the row version tells that this page was read
    # before the gateway's scale to 4 landed.
    await _cycle_with_action_mid_page(world, lambda: world.svc.scale(ALPHA, job_id, 4))
    assert (await world.row(job_id))["status"]["desired_replicas"] == 4
    assert world.store.jobs.skipped == 1
    await world.sync.cycle()  # asked after the scale, the vendor says 4 too
    assert (await world.row(job_id))["status"]["desired_replicas"] == 4
    events = await world.store.events.for_job(job_id)
    assert [(e["source"], e["message"]) for e in events if e["kind"] == "change"] == [
        ("gateway", "desired_replicas: 1 -> 4; message: None -> scale to 4 replica(s) requested"),
        ("sync", "message: scale to 4 replica(s) requested -> None")]


async def test_a_scale_on_the_vendors_console_is_stored_and_announced(world: Any) -> None:
    job_id = (await world.submit("serve", kind="inference", serving={"port": 8080})).job.id
    vid = (await world.row(job_id))["backend_job_id"]
    world.vendor.jobs[vid]["replicas"] = 5
    await world.sync.cycle()
    assert (await world.row(job_id))["status"]["desired_replicas"] == 5
    events = await world.store.events.for_job(job_id)
    assert [(e["kind"], e["source"], e["message"]) for e in events][-1] == (
        "change", "sync", "desired_replicas: 1 -> 5")
