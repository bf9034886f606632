"""Run anywhere: `backend: auto` or a list, placed by policy on the capacity the sync loops read, the
decision stored with the job and shown; over real sockets on both simulators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import eventually, gateway_config
from tests.gwkit import GW, start_gateway
from tests.procs import listed_names

FAST = {"capacity_interval": 0.3, "sync_interval": 0.3}


def job(name: str, backend: Any = "auto", gpus: float = 1, **kw: Any) -> dict[str, Any]:
    return {"name": name, "backend": backend, "image": "python:3.11", "command": ["python", "train.py"],
            "env": {"SIM_OUTCOME": "hang"}, "resources": {"gpus": gpus, "gpu_type": "A100"}, **kw}


async def gateway(tmp_path: Path, runai: dict[str, Any], modelarts: dict[str, Any], **kw: Any) -> GW:
    return await start_gateway(gateway_config(
        f"sqlite+aiosqlite:///{tmp_path}/p.db",
        per_backend={"runai": {**FAST, **runai}, "modelarts": {**FAST, **modelarts}}, **kw))


async def capacity_seen(gw: GW, backend: str, free: float) -> bool:
    """Wait until the stored capacity shows `free` A100 GPUs (per the job's pool) on a backend."""
    async def check() -> bool:
        _, cap = await gw.call("GET", f"/v1/backends/{backend}/capacity")
        return any(p["gpu_type"] == "A100" and p["free_gpus"] == free for p in cap["pools"])

    return bool(await eventually(check, within=30))


async def test_soonest_goes_where_gpus_are_free_and_the_record_says_why(tmp_path: Path) -> None:
    gw = await gateway(tmp_path, runai={"simulator": {"gpus": {"a100": 1}}},
                       modelarts={"simulator": {"gpus": {"modelarts.vm.gpu.a100.1": 4}}})
    try:
        hog = await gw.submit(job("hog", backend="runai"))
        await gw.wait_phase(hog["id"], {"RUNNING"})
        assert await capacity_seen(gw, "runai", 0)
        status, dry = await gw.call("POST", "/v1/jobs?dry_run=true",
                                    json=job("where", placement={"policy": "soonest"}))
        assert status == 200 and dry["backend"] == "modelarts", dry
        placed = await gw.submit(job("placed", placement={"policy": "soonest"}))
        assert placed["backend"] == "modelarts"
        p = placed["placement"]
        assert (p["policy"], p["chosen"]) == ("soonest", "modelarts") and p["why"].startswith("GPUs free now")
        by = {c["backend"]: c for c in p["candidates"]}
        assert by["runai"]["feasible"] and by["runai"]["free_gpus"] == 0
        assert by["modelarts"]["free_gpus"] == 4 and by["modelarts"]["capacity_age_seconds"] is not None
        _, again = await gw.call("GET", f"/v1/jobs/{placed['id']}")
        assert again["placement"] == p and again["spec"]["backend"] == "auto"  # as submitted, and where it went
        await gw.wait_phase(placed["id"], {"RUNNING"})
    finally:
        await gw.c.close()


async def test_cheapest_goes_where_the_price_says_waiting_if_it_must(tmp_path: Path) -> None:
    # ModelArts is full and cheaper; Run:ai has room and costs more: cheapest waits on ModelArts.
    gw = await gateway(tmp_path, runai={"price_per_gpu_hour": 5.0, "simulator": {"gpus": {"a100": 4}}},
                       modelarts={"price_per_gpu_hour": 1.0, "simulator": {"gpus": {"modelarts.vm.gpu.a100.1": 1}}})
    try:
        hog = await gw.submit(job("hog", backend="modelarts"))
        await gw.wait_phase(hog["id"], {"RUNNING"})
        assert await capacity_seen(gw, "modelarts", 0)
        cheap = await gw.submit(job("cheap", backend=["runai", "modelarts"], placement={"policy": "cheapest"}))
        assert cheap["backend"] == "modelarts" and "cheapest" in cheap["placement"]["why"]
        assert "may wait" in cheap["placement"]["why"]
        prices = {c["backend"]: c["price_per_hour"] for c in cheap["placement"]["candidates"]}
        assert prices == {"runai": 5.0, "modelarts": 1.0}
        soon = await gw.submit(job("soon", backend=["modelarts", "runai"], placement={"policy": "soonest"}))
        assert soon["backend"] == "runai"  # the same capacity, another policy
        ordered = await gw.submit(job("ordered", backend=["modelarts", "runai"], placement={"policy": "ordered"}))
        assert ordered["backend"] == "runai" and ordered["placement"]["why"].startswith("the first candidate with")
    finally:
        await gw.c.close()


async def test_infeasible_everywhere_is_a_422_naming_each_candidate(tmp_path: Path) -> None:
    gw = await gateway(tmp_path, runai={}, modelarts={})
    try:
        bad = job("nowhere", gpus=3)
        bad["resources"]["gpu_type"] = "Ascend910"  # no Run:ai node pool carries it; no 3-card flavor on ModelArts
        status, err = await gw.call("POST", "/v1/jobs", json=bad)
        assert status == 422, err
        locs = {tuple(e["loc"]): e["msg"] for e in err["errors"]}
        assert set(locs) == {("backend", "runai"), ("backend", "modelarts")}, err
        _, listed = await gw.call("GET", "/v1/jobs")
        assert listed["jobs"] == []  # nothing stored, nothing sent
        status, err = await gw.call("POST", "/v1/jobs", json=job("typo", backend=["runai", "nope"]))
        assert status == 422 and err["errors"][0]["loc"] == ["backend", 1]
        status, err = await gw.call("POST", "/v1/jobs", json=job("twice", backend=["runai", "runai"]))
        assert status == 422 and err["errors"][0]["loc"][0] == "backend"
    finally:
        await gw.c.close()


async def test_a_named_backend_is_not_placed_and_tes_may_ask_for_auto(tmp_path: Path) -> None:
    gw = await gateway(tmp_path, runai={}, modelarts={})
    try:
        named = await gw.submit(job("named", backend="runai"))
        assert named["backend"] == "runai" and named["placement"] is None
        status, task = await gw.call("POST", "/ga4gh/tes/v1/tasks", json={
            "name": "auto-task", "executors": [{"image": "python:3.11", "command": ["python", "-V"]}],
            "resources": {"cpu_cores": 1, "backend_parameters": {"backend": "auto"}}})
        assert status == 200, task
        _, placed = await gw.call("GET", f"/v1/jobs/{task['id']}")
        assert placed["placement"] is not None and placed["backend"] == placed["placement"]["chosen"]
        status, plain = await gw.call("POST", "/ga4gh/tes/v1/tasks", json={
            "name": "no-backend", "executors": [{"image": "python:3.11", "command": ["python", "-V"]}]})
        assert status == 200
        _, placed = await gw.call("GET", f"/v1/jobs/{plain['id']}")
        assert placed["placement"]["policy"] == "soonest"  # the config's default policy
    finally:
        await gw.c.close()


async def _vendor_names(gw: GW, backend: str) -> list[str]:
    """Every job name on a simulated vendor, through its own list API."""
    from gateway.api.http import SERVICE

    return await listed_names(gw.c.app[SERVICE].adapters[backend])


async def test_a_job_waiting_past_max_wait_moves_once_to_the_vendor_with_capacity(tmp_path: Path) -> None:
    gw = await gateway(tmp_path, runai={"simulator": {"gpus": {"a100": 1}}},
                       modelarts={"simulator": {"gpus": {"modelarts.vm.gpu.a100.1": 2}}})
    try:
        hog = await gw.submit(job("hog", backend="runai"))
        await gw.wait_phase(hog["id"], {"RUNNING"})
        # It names Run:ai, which is full, and may wait 1 s before it moves.
        waiter = await gw.submit(job("waiter", backend="runai", env={"SIM_RUN_SECONDS": "2"},
                                     placement={"max_wait": 1}))
        await eventually(lambda: _moved(gw, waiter["id"]), within=40)
        _, source = await gw.call("GET", f"/v1/jobs/{waiter['id']}")
        target_id = source["migrated_to"]
        assert target_id, source
        _, target = await gw.call("GET", f"/v1/jobs/{target_id}")
        assert target["backend"] == "modelarts" and target["migrated_from"] == waiter["id"]
        p = target["placement"]
        assert p["moves"] == 1 and p["why"].startswith("moved from runai after waiting") and "no-capacity" in p["why"]
        done = await gw.wait_phase(target_id, {"SUCCEEDED", "FAILED"}, within=60)
        assert done["status"]["phase"] == "SUCCEEDED"
        cancelled = await gw.wait_phase(waiter["id"], {"CANCELLED"}, within=30)
        assert cancelled["status"]["phase"] == "CANCELLED"
        _, evs = await gw.call("GET", f"/v1/jobs/{target_id}/events?vendor=false")
        assert evs["events"][0]["message"].startswith("placed on modelarts: moved from runai")
        # Counted on the vendors: one target on ModelArts, the source gone from Run:ai's live list.
        vendor_name = target["vendor_name"]
        assert (await _vendor_names(gw, "modelarts")).count(vendor_name) == 1
        assert len([n for n in await _vendor_names(gw, "modelarts") if n.startswith("waiter-")]) == 1

        async def source_gone() -> bool:  # cancelled on Run:ai: no longer among its workloads (no orphan)
            return source["vendor_name"] not in await _vendor_names(gw, "runai")

        assert await eventually(source_gone, within=30)
    finally:
        await gw.c.close()


async def _moved(gw: GW, job_id: str) -> bool:
    _, row = await gw.call("GET", f"/v1/jobs/{job_id}")
    return bool(row["migrated_to"])
