"""One adapter contract suite, run against both adapters over their simulators on real sockets."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

import adapters.registry  # noqa: F401  (registers the vendors)
from gateway.core.adapter import REGISTRY, Adapter, Capability, Handle, Registry
from gateway.core.config import BACKEND_MODELS, BackendConfig
from gateway.core.errors import BackendAuthError, BackendConflict, UnsupportedByBackend
from gateway.core.ids import new_job_id
from gateway.core.logs import configure_logging, register_secrets
from gateway.core.models import Phase, parse_spec
from gateway.core.translation import Translation
from tests.conftest import LoopSim, base_config, eventually, start_loop_sim

SECRETS = ("tjg-demo-secret", "TJGDEMOSK")


@dataclass
class Rig:
    vendor: str
    sim: LoopSim
    adapter: Adapter
    session: aiohttp.ClientSession

    async def sim_get(self, path: str) -> Any:
        async with self.session.get(self.sim.url + path) as r:
            return await r.json()

    async def faults(self, rates: dict[str, float]) -> None:
        async with self.session.put(self.sim.url + "/_sim/faults", json=rates) as r:
            assert r.status == 200

    def spec_translation(self, name: str = "job", **env: str) -> Translation:
        raw = {"name": name, "backend": self.vendor, "image": "python:3.11", "command": ["python", "t.py"],
               "env": env or {"SIM_RUN_SECONDS": "1"}}
        return self.adapter.translate(parse_spec(raw), new_job_id())


async def make_rig(vendor: str, **sim_kwargs: Any) -> Rig:
    sim = await start_loop_sim(vendor, speed=sim_kwargs.pop("speed", 20.0), **sim_kwargs)
    cfg = base_config(runai_url=sim.url, ma_url=sim.url)
    session = aiohttp.ClientSession()
    return Rig(vendor, sim, REGISTRY.create(cfg.backend(vendor), session), session)


@pytest.fixture(params=["runai", "modelarts"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    r = await make_rig(request.param)
    yield r
    await r.session.close()
    await r.sim.runner.cleanup()


async def until(fn: Any, want: Any, within: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        got = await fn()
        if got == want or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.02)


async def phase_of(rig: Rig, handle: Handle) -> Phase | None:
    job = await rig.adapter.get(handle)
    return None if job is None else job.status.phase


async def test_submit_runs_to_success(rig: Rig) -> None:
    tr = rig.spec_translation("ok", SIM_RUN_SECONDS="0.5")
    job = await rig.adapter.submit(tr)
    assert job.handle.vendor_name == tr.vendor_name and job.status.phase == Phase.QUEUED
    assert job.handle.backend_job_id
    assert await until(lambda: phase_of(rig, job.handle), Phase.SUCCEEDED) == Phase.SUCCEEDED
    got = await rig.adapter.get(job.handle)
    assert got is not None and got.status.terminal and got.status.vendor_phase == "Completed"


async def test_failure_is_failed(rig: Rig) -> None:
    job = await rig.adapter.submit(rig.spec_translation("bad", SIM_OUTCOME="failed", SIM_RUN_SECONDS="0"))
    assert await until(lambda: phase_of(rig, job.handle), Phase.FAILED) == Phase.FAILED


async def test_cancel_ends_the_job(rig: Rig) -> None:
    job = await rig.adapter.submit(rig.spec_translation("stop-me", SIM_OUTCOME="hang"))
    assert await until(lambda: phase_of(rig, job.handle), Phase.RUNNING) == Phase.RUNNING
    await rig.adapter.cancel(job.handle)
    # Run:ai deletes the workload (it disappears); ModelArts terminates it (Terminated = CANCELLED).
    want = None if rig.vendor == "runai" else Phase.CANCELLED
    assert await until(lambda: phase_of(rig, job.handle), want) == want


async def test_find_by_name_and_duplicate_is_adopted(rig: Rig) -> None:
    tr = rig.spec_translation("dup")
    first = await rig.adapter.submit(tr)
    found = await rig.adapter.find_by_name(tr.vendor_name, tr.project)
    assert found is not None and found.handle.backend_job_id == first.handle.backend_job_id
    assert await rig.adapter.find_by_name("no-such-job-1234") is None
    with pytest.raises(BackendConflict):
        await rig.adapter._create(tr)
    again = await rig.adapter.submit(tr)
    assert again.handle.backend_job_id == first.handle.backend_job_id


async def test_list_pages_and_delete_is_idempotent(rig: Rig) -> None:
    handles = [(await rig.adapter.submit(rig.spec_translation(f"p{i}", SIM_OUTCOME="hang"))).handle
               for i in range(5)]
    seen: list[str] = []
    offset, more = 0, True
    while more:
        page, more = await rig.adapter.list_page(offset, 2)
        seen += [j.handle.backend_job_id for j in page]
        offset += 2
    assert sorted(seen) == sorted(h.backend_job_id for h in handles)
    await rig.adapter.delete(handles[0])
    await rig.adapter.delete(handles[0])
    assert await until(lambda: phase_of(rig, handles[0]), None) is None


async def test_events_are_oldest_first(rig: Rig) -> None:
    job = await rig.adapter.submit(rig.spec_translation("ev", SIM_RUN_SECONDS="0"))
    await until(lambda: phase_of(rig, job.handle), Phase.SUCCEEDED)
    evs = await rig.adapter.events(job.handle)
    assert "Creating" in evs[0]["message"] and "Completed" in evs[-1]["message"]
    assert {e["source"] for e in evs} == {rig.vendor}


async def test_unsupported_is_refused_before_any_vendor_call(rig: Rig) -> None:
    job = await rig.adapter.submit(rig.spec_translation("caps", SIM_OUTCOME="hang"))
    before = (await rig.sim_get("/_sim/stats"))["total"]
    op = rig.adapter.logs if rig.vendor == "runai" else rig.adapter.suspend
    with pytest.raises(UnsupportedByBackend) as err:
        await op(job.handle)
    assert err.value.status == 409 and "cannot" in err.value.detail
    assert (await rig.sim_get("/_sim/stats"))["total"] == before
    caps = rig.adapter.capabilities()
    missing = Capability.LOGS if rig.vendor == "runai" else Capability.SUSPEND
    assert caps[missing.value]["supported"] is False and caps[missing.value]["reason"]
    assert caps[Capability.CANCEL.value] is True


async def test_runai_suspend_and_resume() -> None:
    rig = await make_rig("runai")
    try:
        job = await rig.adapter.submit(rig.spec_translation("sr", SIM_OUTCOME="hang"))
        await until(lambda: phase_of(rig, job.handle), Phase.RUNNING)
        await rig.adapter.suspend(job.handle)
        assert await until(lambda: phase_of(rig, job.handle), Phase.SUSPENDED) == Phase.SUSPENDED
        await rig.adapter.resume(job.handle)
        assert await until(lambda: phase_of(rig, job.handle), Phase.RUNNING) == Phase.RUNNING
    finally:
        await rig.session.close()
        await rig.sim.runner.cleanup()


async def test_modelarts_logs_preview() -> None:
    rig = await make_rig("modelarts")
    try:
        job = await rig.adapter.submit(rig.spec_translation("lg", SIM_RUN_SECONDS="0.5"))
        await until(lambda: phase_of(rig, job.handle), Phase.SUCCEEDED)
        chunk = await rig.adapter.logs(job.handle, tail=3)
        assert chunk.task == "worker-0" and len(chunk.content.splitlines()) == 3
    finally:
        await rig.session.close()
        await rig.sim.runner.cleanup()


def test_registry_rejects_duplicates() -> None:
    reg = Registry()

    class A(Adapter):
        kind = "x"
        config_model = BackendConfig

    reg.register(A)
    with pytest.raises(ValueError, match="already registered"):
        reg.register(A)
    with pytest.raises(ValueError, match="no adapter"):
        reg.get("nope")
    assert "x" not in REGISTRY.kinds() and "x" not in BACKEND_MODELS  # a registry of its own is its own
    assert {"modelarts", "runai"} <= set(REGISTRY.kinds())


@pytest.mark.parametrize("kind", REGISTRY.kinds())
def test_only_an_inference_workload_can_be_scaled(kind: str) -> None:
    cls = REGISTRY.get(kind)
    training = cls.unsupported_for(cls.__new__(cls), "training")
    inference = cls.unsupported_for(cls.__new__(cls), "inference")
    assert training[Capability.SCALE] == "only an inference workload has replicas"
    assert Capability.SCALE not in inference


async def test_50_concurrent_calls_with_an_expired_token_fetch_one() -> None:
    rig = await make_rig("runai", token_ttl=2)
    try:
        job = await rig.adapter.submit(rig.spec_translation("tok", SIM_OUTCOME="hang"))
        stats = (await rig.sim_get("/_sim/stats"))["requests"]
        assert stats["POST /api/v1/token"] == 1
        auth = rig.adapter.client.auth  # type: ignore[attr-defined]

        async def expired() -> bool:  # the client's own clock says it needs a new token (ttl 2 s)
            return not auth._fresh()

        assert await eventually(expired, within=10, step=0.02)
        results = await asyncio.gather(*(rig.adapter.get(job.handle) for _ in range(50)))
        assert all(r is not None for r in results)
        stats = (await rig.sim_get("/_sim/stats"))["requests"]
        assert stats["POST /api/v1/token"] == 2
    finally:
        await rig.session.close()
        await rig.sim.runner.cleanup()


async def test_a_401_refreshes_once_and_retries() -> None:
    rig = await make_rig("runai")
    try:
        job = await rig.adapter.submit(rig.spec_translation("re", SIM_OUTCOME="hang"))
        auth = rig.adapter.client.auth  # type: ignore[attr-defined]
        auth.token = auth.token[:-4] + "AAAA"  # forged: the simulator answers 401
        assert (await rig.adapter.get(job.handle)) is not None
        stats = (await rig.sim_get("/_sim/stats"))["requests"]
        assert stats["POST /api/v1/token"] == 2
    finally:
        await rig.session.close()
        await rig.sim.runner.cleanup()


@pytest.mark.parametrize("vendor", ["runai", "modelarts"])
async def test_bad_credentials_are_an_auth_error_without_the_secret(vendor: str) -> None:
    sim = await start_loop_sim(vendor, credentials=[("tjg-demo", "other-secret"), ("TJGDEMOAK", "otherSK")])
    cfg = base_config(runai_url=sim.url, ma_url=sim.url)
    try:
        async with aiohttp.ClientSession() as s:
            adapter = REGISTRY.create(cfg.backend(vendor), s)
            with pytest.raises(BackendAuthError) as err:
                await adapter.find_by_name("x")
            text = json.dumps(err.value.problem()) + str(err.value)
            assert not any(secret in text for secret in SECRETS)
    finally:
        await sim.runner.cleanup()


async def count_vendor_jobs(rig: Rig, prefix: str) -> list[str]:
    """Names of the vendor's jobs, read through the vendor's own list API (faults off)."""
    names: list[str] = []
    offset, more = 0, True
    while more:
        page, more = await rig.adapter.list_page(offset, 50 if rig.vendor == "modelarts" else 500)
        names += [j.handle.vendor_name for j in page if j.handle.vendor_name.startswith(prefix)]
        offset += 50 if rig.vendor == "modelarts" else 500
    return names


@pytest.mark.parametrize("vendor", ["runai", "modelarts"])
async def test_300_submits_under_faults_make_exactly_300_jobs(vendor: str) -> None:
    stream = io.StringIO()
    register_secrets(SECRETS)
    configure_logging("info", stream=stream, json_lines=True)
    rig = await make_rig(vendor, seed=1234, speed=1.0)
    try:
        await rig.faults({"http503": 0.2, "http429": 0.1, "reset": 0.05, "drop_after_commit": 0.1})
        translations = [rig.spec_translation(f"soak{i}", SIM_OUTCOME="hang") for i in range(300)]
        gate = asyncio.Semaphore(25)

        async def one(tr: Translation) -> str:
            async with gate:
                return (await rig.adapter.submit(tr)).handle.backend_job_id

        ids = await asyncio.gather(*(one(t) for t in translations))
        await rig.faults({})
        names = await count_vendor_jobs(rig, "soak")
        assert len(names) == 300 and len(set(names)) == 300
        assert set(names) == {t.vendor_name for t in translations}
        assert len(set(ids)) == 300
        log = (await rig.sim_get("/_sim/fault-log"))
        assert {f["fault"] for f in log} >= {"http503", "http429", "reset", "drop_after_commit"}
    finally:
        await rig.session.close()
        await rig.sim.runner.cleanup()
        configure_logging("info")
    logged = stream.getvalue()
    assert "create_adopted" in logged  # the ambiguity path really ran
    assert not any(secret in logged for secret in SECRETS)
