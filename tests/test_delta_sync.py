"""Delta sync: what changed is read in a request or a few, what a delta cannot see is caught by the
reconcile, and the vendors' SDKs ask the simulators the same questions."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import adapters.registry  # noqa: F401  (registers the vendors)
from gateway.background.sync import BackendSync
from gateway.core.adapter import REGISTRY
from gateway.store import Store
from simulators.modelarts.app import SIM_KEY as MA_KEY
from simulators.runai.app import SIM_KEY as RUNAI_KEY
from tests.conftest import (
    CLUSTER,
    PROJECT,
    LoopSim,
    SimThread,
    base_config,
    eventually,
    start_loop_sim,
)
from tests.oracles import validate_runai
from tests.test_simulators import _ma_client, runapy_client, wait_for
from tests.test_sync import _sim_phase, seed_store

N = 600  # live jobs: 12 ModelArts pages, so the census has windows to halve


async def _fleet(tmp_path: Path, vendor: str, **extra: Any) -> tuple[LoopSim, Store, list[str], Any]:
    sim = await start_loop_sim(vendor, speed=50.0)
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/d.db")
    await store.migrate()
    fake = sim.app[RUNAI_KEY] if vendor == "runai" else sim.app[MA_KEY]
    ids = fake.bulk_create(N, project="1", cluster=CLUSTER) if vendor == "runai" else \
        fake.bulk_create(N, project=PROJECT)
    await seed_store(store, vendor, ids)

    async def all_running() -> bool:
        return all(_sim_phase(fake, vendor, i) == "Running" for i in ids)

    assert await eventually(all_running, within=30)
    return sim, store, ids, fake


def _sync(sim: LoopSim, store: Store, vendor: str, s: aiohttp.ClientSession, **extra: Any) -> BackendSync:
    backend = base_config(runai_url=sim.url, ma_url=sim.url).backend(vendor).model_copy(update=extra)
    return BackendSync(REGISTRY.create(backend, s), store, page_size=500 if vendor == "runai" else 50)


async def _served(s: aiohttp.ClientSession, sim: LoopSim, reset: bool = False) -> int:
    if reset:
        async with s.delete(sim.url + "/_sim/stats"):
            return 0
    async with s.get(sim.url + "/_sim/stats") as r:
        return int((await r.json())["total"])


async def _phases(store: Store, vendor: str) -> dict[str, str]:
    rows = await store.jobs.live(vendor)
    return {r["backend_job_id"]: r["phase"] for r in rows}


@pytest.mark.parametrize("vendor", ["runai", "modelarts"])
async def test_a_delta_reads_what_changed_in_a_few_requests_whatever_the_fleet(tmp_path: Path, vendor: str) -> None:
    sim, store, ids, _ = await _fleet(tmp_path, vendor)
    try:
        async with aiohttp.ClientSession() as s:
            # (No skew and no overlap: a quiet delta is then exactly one request; their effect on what is
            # read is the property test's business.)
            sync = _sync(sim, store, vendor, s, clock_skew=0, delta_overlap=0)
            first = await sync._sync_once()
            assert first.kind == "full" and first.updated == N
            assert set((await _phases(store, vendor)).values()) == {"RUNNING"}

            await _served(s, sim, reset=True)
            quiet = await sync._sync_once()
            assert quiet.kind == "delta" and quiet.updated == 0
            assert await _served(s, sim) == 1, "a delta with nothing changed is one request"

            ended = [ids[7], ids[300], ids[599]]
            async with s.post(sim.url + "/_sim/finish", json={"ids": ended}) as r:
                assert len((await r.json())["ids"]) == 3
            await _served(s, sim, reset=True)
            news = await sync._sync_once()
            served = await _served(s, sim)
            assert news.kind == "delta" and news.updated == 3
            live = await _phases(store, vendor)
            assert not set(ended) & set(live) and len(live) == N - 3
            # Run:ai: one request. ModelArts: a count, then about log2(N / 50) + 1 per job that ended, + its GET.
            bound = 1 if vendor == "runai" else 1 + 3 * (math.ceil(math.log2(N / 50)) + 2)
            assert served <= bound, (served, bound)

            one = ids[123]
            async with s.post(sim.url + "/_sim/finish", json={"ids": [one]}):
                pass
            await _served(s, sim, reset=True)
            assert (await sync._sync_once()).updated == 1
            # One ended job costs fewer requests than reading the whole list (N / page + its GETs) would.
            assert await _served(s, sim) < math.ceil(N / (500 if vendor == "runai" else 50))
    finally:
        await store.close()
        await sim.runner.cleanup()


@pytest.mark.parametrize("vendor", ["runai", "modelarts"])
async def test_a_deletion_on_the_vendor_is_noticed_by_the_reconcile(tmp_path: Path, vendor: str) -> None:
    sim, store, ids, fake = await _fleet(tmp_path, vendor)
    try:
        async with aiohttp.ClientSession() as s:
            now = [1000.0]
            sync = _sync(sim, store, vendor, s, reconcile_interval=60)
            sync.clock = lambda: now[0]
            await sync._sync_once()
            gone = ids[42]
            if vendor == "runai":
                del fake.jobs[gone]
                fake.order = [w for w in fake.order if w.id != gone]
            else:
                fake.jobs[gone].deleted = True
            fake.revision += 1
            quiet = await sync._sync_once()
            assert quiet.kind == "delta"
            if vendor == "runai":
                assert gone in await _phases(store, vendor), "Run:ai's changed-since list cannot show a deletion"
            else:  # ModelArts' counts drop by one: the census finds it, and its GET says it is gone
                assert gone not in await _phases(store, vendor)
            now[0] += 59
            assert (await sync._sync_once()).kind == "delta"
            now[0] += 1  # the reconcile is due
            full = await sync._sync_once()
            assert full.kind == "full"
            assert gone not in await _phases(store, vendor)
            row = await store.jobs.get(f"{42:032x}")
            assert row is not None and row["phase"] == "CANCELLED"
            assert "outside the gateway" in row["status"]["message"]
    finally:
        await store.close()
        await sim.runner.cleanup()


def _post(url: str, body: dict[str, Any]) -> Any:
    import json
    import urllib.request

    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def test_runapy_asks_the_simulator_what_changed_since_a_time(runai_sim_thread: SimThread) -> None:
    """The delta's question in runapy's words: filterBy phaseUpdatedAt>=, sortBy phaseUpdatedAt."""
    from runai import models

    client = runapy_client(runai_sim_thread.url)
    api = client.workloads.workloads
    ids = []
    for i in range(3):
        req = models.TrainingCreationRequest(
            name=f"delta-{i}", project_id="1", cluster_id=CLUSTER,
            spec=models.TrainingSpecSpec(image="x", environment_variables=[
                models.EnvironmentVariable(name="SIM_OUTCOME", value="hang")]))
        ids.append(client.workloads.trainings.create_training1(training_creation_request=req).data["workloadId"])
    get = client.workloads.trainings.get_training
    for wid in ids:
        assert wait_for(lambda wid=wid: get(wid).data["actualPhase"], "Running") == "Running"
    at = _post(runai_sim_thread.url + "/_sim/finish", {"ids": [ids[2], ids[0]]})["at"]
    since = datetime.fromtimestamp(int(at * 1000) / 1000 - 0.001, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    got = api.get_workloads(filter_by=[f"phaseUpdatedAt>={since}"], sort_by="phaseUpdatedAt", sort_order="asc")
    rows = got.data["workloads"]
    assert sorted(w["id"] for w in rows) == sorted([ids[0], ids[2]])
    assert all(w["phase"] == "Completed" for w in rows)
    stamps = [w["phaseUpdatedAt"] for w in rows]
    assert stamps == sorted(stamps) and all(s >= since for s in stamps)
    for w in rows:
        validate_runai("Workload", w)
    # Everything changed before: older stamps, and a bound after them all returns nothing.
    older = api.get_workloads(filter_by=[f"phaseUpdatedAt<={since}"], sort_by="phaseUpdatedAt", sort_order="desc")
    assert ids[1] in [w["id"] for w in older.data["workloads"]]
    later = datetime.fromtimestamp(at + 60, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert api.get_workloads(filter_by=[f"phaseUpdatedAt>={later}"]).data["workloads"] == []


def test_huawei_sdk_counts_jobs_by_phase_and_creation_window(modelarts_sim_thread: SimThread) -> None:
    """The census' question in the SDK's words: phase in [...], create_time between [lo, hi], and the total."""
    from huaweicloudsdkmodelarts.v1 import Filter, JobSearches, ListTrainingJobsRequest

    ids = _post(modelarts_sim_thread.url + "/_sim/bulk", {"n": 120, "project": PROJECT, "prefix": "census"})["ids"]
    client = _ma_client(modelarts_sim_thread.url)

    def count(phase: str, lo: int, hi: int) -> tuple[int, list[str]]:
        got = client.list_training_jobs(ListTrainingJobsRequest(body=JobSearches(offset=0, limit=50, filters=[
            Filter(key="phase", operator="in", value=[phase]),
            Filter(key="create_time", operator="between", value=[str(lo), str(hi)])])))
        return int(got.total), [str(i.metadata.id) for i in got.items]

    def born() -> dict[str, int]:
        got: dict[str, int] = {}
        for page in range(3):
            res = client.list_training_jobs(ListTrainingJobsRequest(body=JobSearches(
                offset=page, limit=50, sort_by="create_time", order="asc",
                filters=[Filter(key="name", operator="like", value=["census-"])])))
            got.update({str(i.metadata.id): int(i.metadata.create_time) for i in res.items})
        return got

    assert wait_for(lambda: count("Running", 0, 2**62)[0], 120, timeout=30) == 120
    when = born()
    assert set(when) == set(ids)
    _post(modelarts_sim_thread.url + "/_sim/finish", {"ids": [ids[10], ids[100]]})
    lo, hi = min(when.values()), max(when.values())
    assert count("Running", lo, hi)[0] == 118
    cut = when[ids[60]]
    left, right = count("Running", lo, cut - 1)[0], count("Running", cut, hi)[0]
    assert (left, right) == (59, 59)  # the halves add up, each short by its ended job
    total, page = count("Completed", when[ids[100]], when[ids[100]])
    assert (total, page) == (1, [ids[100]])


async def test_a_job_confirmed_after_a_delta_read_its_changes_gets_them_next_delta(tmp_path: Path) -> None:
    """The race a delta sync brings: the vendor's changes to a job are read while its row is still pending (the
    create's answer not yet stored), so the delta cannot place them and moves on; the confirmation then stores
    the create's older status. Told the confirmed id, the sync reads that job next delta."""
    import time

    from gateway.core.models import JobStatus, Phase
    from gateway.service.rows import status_json

    sim = await start_loop_sim("runai", speed=50.0)
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/r.db")
    await store.migrate()
    try:
        fake = sim.app[RUNAI_KEY]
        async with aiohttp.ClientSession() as s:
            sync = _sync(sim, store, "runai", s, clock_skew=0, delta_overlap=0)
            await seed_store(store, "runai", fake.bulk_create(5, project="1", cluster=CLUSTER))  # (something live)
            await sync._sync_once()  # the start-up whole-list read
            asked = time.time()
            [vid] = fake.bulk_create(1, project="1", cluster=CLUSTER, prefix="late")  # created; answer in flight
            assert await eventually(lambda: _async(_sim_phase(fake, "runai", vid) == "Running"), within=30)
            row = {"id": "f" * 32, "tenant": "alpha", "name": "late", "backend": "runai", "project": "1",
                   "vendor_name": "late-0", "vendor_kind": "training", "backend_job_id": None, "spec": {},
                   "report": [], "labels": {}, "phase": "QUEUED", "terminal": False,
                   "status": JobStatus(phase=Phase.QUEUED).model_dump(mode="json"), "origin": "gateway",
                   "submit_state": "pending", "submit_error": None, "cancel_requested": False,
                   "created_at": asked, "updated_at": asked, "deleted_at": None, "migrated_from": None,
                   "migrated_to": None}
            await store.jobs.insert_rows([row])
            assert (await sync._sync_once()).kind == "delta"  # reads the job's Running: no row to place it in
            created = JobStatus(phase=Phase.QUEUED, vendor_phase="Creating")  # what the create answered
            await store.jobs.confirm(row["id"], status_json(created), {"backend_job_id": vid,
                                                                      "vendor_kind": "training",
                                                                      "submit_state": "submitted"})
            sync.nudge(vid)
            await sync._sync_once()
            got = await store.jobs.get(row["id"])
            assert got is not None and got["phase"] == "RUNNING", got["phase"]
    finally:
        await store.close()
        await sim.runner.cleanup()


async def _async(value: bool) -> bool:
    return value
