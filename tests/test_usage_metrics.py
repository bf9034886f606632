"""Job metrics, GPU usage and idle GPUs end to end over real sockets, on both vendors' simulators."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.api.http import STORE
from tests.conftest import eventually, gateway_config
from tests.gwkit import ALPHA, BETA, GW, OPS, spec, start_gateway
from tests.test_sync import Receiver

ROOT = Path(__file__).resolve().parent.parent
RANK = {"QUEUED": 0, "STARTING": 1, "RUNNING": 2, "SUCCEEDED": 3, "FAILED": 3, "CANCELLED": 3}
IDLE = {"window_seconds": 1.0, "check_interval": 0.3, "threshold_percent": 10.0}


async def _gateway(tmp_path: Path, **extra: Any) -> GW:
    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/tjg.db", backend_extra={"metrics_sample_seconds": 0.2},
                         idle=IDLE, **extra)
    return await start_gateway(cfg)


def _gpu_job(backend: str, name: str, **env: str) -> dict[str, Any]:
    return spec(backend, name, env={"SIM_OUTCOME": "hang", **env}, resources={"gpus": 1})


async def _tjg(gw: GW, *args: str, key: str = "alpha-key-123") -> tuple[int, str, str]:
    url = str(gw.c.make_url("/")).rstrip("/")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TJG_")}
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", *args, "--url", url, "--api-key", key,
                                             cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 60)
    return int(p.returncode or 0), out.decode(), err.decode()


async def test_metrics_of_running_jobs_on_both_backends(tmp_path: Path) -> None:
    gw = await _gateway(tmp_path)
    try:
        jobs = {b: await gw.submit(_gpu_job(b, f"metrics-{b}")) for b in ("runai", "modelarts")}
        for job in jobs.values():
            assert (await gw.wait_phase(job["id"], {"RUNNING"}))["status"]["phase"] == "RUNNING"

        async def enough(job_id: str) -> dict[str, Any] | None:
            status, body = await gw.call("GET", f"/v1/jobs/{job_id}/metrics")
            assert status == 200, body
            util = next((s for s in body["series"] if s["name"] == "gpu_utilization"), None)
            return body if util is not None and len(util["points"]) >= 3 else None

        for backend, job in jobs.items():
            body = await eventually(lambda j=job: enough(j["id"]), within=20)
            assert body, f"{backend}: fewer than 3 gpu_utilization points"
            util = next(s for s in body["series"] if s["name"] == "gpu_utilization")
            assert util["unit"] == "percent" and all(0 <= v <= 100 for _, v in util["points"])
            times = [datetime.fromisoformat(t) for t, _ in util["points"]]
            assert times == sorted(times)
            notes = {n["name"]: n["outcome"] for n in body["report"]}
            assert set(notes) == {"gpu_utilization", "gpu_memory_used", "cpu_utilization", "memory_used"}
            assert notes["gpu_utilization"] == "exact"
            # ModelArts has GPU memory only as a percentage: it says so instead of inventing bytes.
            want_mem = "unavailable" if backend == "modelarts" else "exact"
            assert notes["gpu_memory_used"] == want_mem
            assert ("gpu_memory_used" in {s["name"] for s in body["series"]}) == (want_mem != "unavailable")
            rc, out, err = await _tjg(gw, "metrics", job["id"])
            assert rc == 0, err
            line = next(ln for ln in out.splitlines() if ln.startswith("gpu_utilization"))
            assert "%" in line and any(c in line for c in "▁▂▃▄▅▆▇█")
            rc, out, _ = await _tjg(gw, "metrics", job["id"], "-o", "json", "--names", "gpu_utilization")
            assert rc == 0 and [s["name"] for s in json.loads(out)["series"]] == ["gpu_utilization"]

        status, body = await gw.call("GET", f"/v1/jobs/{jobs['runai']['id']}/metrics?names=gpu_utilization",
                                     headers=BETA)
        assert status == 404  # another tenant's job
        status, body = await gw.call("GET", f"/v1/jobs/{jobs['runai']['id']}/metrics?names=bogus")
        assert status == 400 and body["errors"][0]["loc"] == ["query", "names"]
        status, body = await gw.call("GET", f"/v1/jobs/{jobs['runai']['id']}/metrics?since=yesterday")
        assert status == 400 and body["errors"][0]["loc"] == ["query", "since"]
    finally:
        await gw.c.close()


def _running_seconds(events: list[dict[str, Any]]) -> float:
    ts = [(datetime.fromisoformat(e["at"]).timestamp(), e["to_phase"]) for e in events if e["kind"] == "transition"]
    return sum(ts[i + 1][0] - t for i, (t, p) in enumerate(ts) if p == "RUNNING" and i + 1 < len(ts))


async def test_usage_gpu_hours_match_the_transitions_and_stay_per_tenant(tmp_path: Path) -> None:
    gw = await _gateway(tmp_path)
    try:
        done = [await gw.submit(spec(b, f"usage-{b}", env={"SIM_RUN_SECONDS": "30"}, resources={"gpus": 1}))
                for b in ("runai", "modelarts")]
        for job in done:
            assert (await gw.wait_phase(job["id"], {"SUCCEEDED"}, within=30))["status"]["phase"] == "SUCCEEDED"
        expected = {}
        for job in done:
            _, evs = await gw.call("GET", f"/v1/jobs/{job['id']}/events?vendor=false")
            expected[job["backend"]] = _running_seconds(evs["events"]) / 3600
        status, body = await gw.call("GET", "/v1/usage?group_by=backend")
        assert status == 200, body
        got = {g["key"]: g for g in body["groups"]}
        for backend, hours in expected.items():
            assert hours > 0
            assert got[backend]["gpu_hours"] == pytest.approx(hours, rel=0.10)
            assert got[backend]["jobs"] == 1 and got[backend]["cost"] > 0
        assert body["total"]["gpu_hours"] == pytest.approx(sum(expected.values()), rel=0.10)
        # Another tenant sees none of it; an admin sees it all.
        _, theirs = await gw.call("GET", "/v1/usage?group_by=backend", headers=BETA)
        assert theirs["groups"] == [] and theirs["total"]["gpu_hours"] == 0
        _, admin = await gw.call("GET", "/v1/usage?group_by=tenant", headers=OPS)
        assert [g["key"] for g in admin["groups"]] == ["alpha"]
        _, future = await gw.call("GET", "/v1/usage?since=2h&until=1h")
        assert future["total"]["jobs"] == 0
        status, bad = await gw.call("GET", "/v1/usage?group_by=colour")
        assert status == 400 and bad["errors"][0]["loc"] == ["query", "group_by"]
        rc, out, err = await _tjg(gw, "usage")
        assert rc == 0, err
        assert "runai" in out and "modelarts" in out and "TOTAL" in out
    finally:
        await gw.c.close()


async def test_an_idle_job_is_marked_once_and_reaches_events_sse_and_webhooks(tmp_path: Path) -> None:
    rx = Receiver()
    runner = await rx.start()
    gw = await _gateway(tmp_path, tenant_extra={"alpha": {"webhooks": [{"url": rx.url, "secret": "idle-hook"}]}})
    try:
        idle = {b: await gw.submit(_gpu_job(b, f"idle-{b}", SIM_GPU_UTIL="3")) for b in ("runai", "modelarts")}
        busy = await gw.submit(_gpu_job("runai", "busy-runai"))

        async def marked(job_id: str) -> bool:
            _, job = await gw.call("GET", f"/v1/jobs/{job_id}")
            return bool(job["status"]["idle"])

        for job in idle.values():
            assert await eventually(lambda j=job: marked(j["id"]), within=20)
        store = gw.c.server.app[STORE]
        for job in idle.values():  # three more looks at each job after its mark: still one mark
            async def looked_again(job_id: str = job["id"], looks: set[float] = set()) -> bool:  # noqa: B006
                row = await store.jobs.get(job_id)
                looks.add(float((row or {}).get("status", {}).get("activity_checked_at") or 0))
                return len(looks) > 3

            assert await eventually(looked_again, within=30, step=0.05)
        for backend, job in idle.items():
            _, evs = await gw.call("GET", f"/v1/jobs/{job['id']}/events?vendor=false")
            kinds = [e["kind"] for e in evs["events"]]
            assert kinds.count("idle") == 1, (backend, kinds)
            _, got = await gw.call("GET", f"/v1/jobs/{job['id']}")
            assert got["status"]["idle_since"] and got["status"]["gpu_utilization"] < 10
        _, b = await gw.call("GET", f"/v1/jobs/{busy['id']}")
        assert b["status"]["idle"] is False and b["status"]["gpu_utilization"] > 30

        hooks = await eventually(lambda: _idle_hooks(rx), within=10)
        assert sorted(h["job_id"] for h in hooks) == sorted(j["id"] for j in idle.values())
        # The SSE stream of one job replays its idle mark as an `idle` event.
        job_id = idle["runai"]["id"]
        async with gw.c.get(f"/v1/jobs/{job_id}/events?watch=true", headers=ALPHA) as r:
            seen = b""
            while b"event: idle" not in seen:
                seen += await asyncio.wait_for(r.content.readany(), 5)
        _, text = await gw.call("GET", "/metrics", headers=OPS)
        assert 'tjg_gpus_idle{backend="runai"} 1.0' in text and 'tjg_gpus_allocated{backend="runai"} 2.0' in text
    finally:
        await gw.c.close()
        await runner.cleanup()


async def _idle_hooks(rx: Receiver) -> list[dict[str, Any]]:
    out = []
    for headers, body in rx.got:
        payload = json.loads(body)
        if payload["type"] == "job.idle":
            assert headers["X-TJG-Event-Type"] == "job.idle"
            out.append(payload)
    return out if len(out) >= 2 else []


async def test_no_normal_run_steps_backwards(tmp_path: Path) -> None:
    """Over many jobs on both vendors, a neutral history only moves forward (QUEUED, STARTING, RUNNING, end)."""
    # A slow clock (Run:ai's Initializing lasts 2 s) so that the sync, polling every 0.05 s over a few live jobs,
    # sees the start-up phases even on a machine whose CPUs are busy elsewhere (at 0.8 s, under two CPU hogs,
    # a run missed every one of 30 jobs' Initializing).
    gw = await start_gateway(gateway_config(f"sqlite+aiosqlite:///{tmp_path}/tjg.db", speed=0.1,
                                            backend_extra={"sync_interval": 0.05}))
    try:
        jobs = await asyncio.gather(*(gw.submit(spec(b, f"order-{b}-{i}", env={"SIM_RUN_SECONDS": "0.5"}))
                                      for b in ("runai", "modelarts") for i in range(6)))
        for job in jobs:
            assert (await gw.wait_phase(job["id"], {"SUCCEEDED"}, within=60))["status"]["phase"] == "SUCCEEDED"
        seen_starting = 0
        for job in jobs:
            _, evs = await gw.call("GET", f"/v1/jobs/{job['id']}/events?vendor=false")
            path = [e["to_phase"] for e in evs["events"] if e["kind"] == "transition"]
            ranks = [RANK[p] for p in path]
            assert ranks == sorted(ranks), f"{job['backend']} {job['name']} stepped back: {path}"
            seen_starting += "STARTING" in path
        assert seen_starting > 0  # the sync saw Initializing somewhere, so the order was really exercised

        # A resume on Run:ai goes Resuming -> Pending -> Initializing -> Running: forward from SUSPENDED.
        job = await gw.submit(spec("runai", "order-resume", env={"SIM_OUTCOME": "hang"}))
        await gw.wait_phase(job["id"], {"RUNNING"}, within=60)
        assert (await gw.call("POST", f"/v1/jobs/{job['id']}/suspend"))[0] == 202
        await gw.wait_phase(job["id"], {"SUSPENDED"}, within=60)
        status, resumed = await gw.call("POST", f"/v1/jobs/{job['id']}/resume")
        assert status == 202 and resumed["status"]["phase"] == "QUEUED"
        await gw.wait_phase(job["id"], {"RUNNING"}, within=60)
        _, evs = await gw.call("GET", f"/v1/jobs/{job['id']}/events?vendor=false")
        path = [e["to_phase"] for e in evs["events"] if e["kind"] == "transition"]
        after = path[path.index("SUSPENDED") + 1:]
        assert [RANK[p] for p in after] == sorted(RANK[p] for p in after) and "STARTING" in after, path
    finally:
        await gw.c.close()


def test_served_models_count_every_replica_and_are_priced_by_their_flavor() -> None:
    import aiohttp as _aiohttp

    import adapters.registry  # noqa: F401  (registers the vendors)
    from gateway.core.adapter import REGISTRY
    from gateway.core.telemetry import job_gpus

    served = {"name": "s", "kind": "inference", "backend": "modelarts", "image": "x", "resources": {"gpus": 1},
              "serving": {"port": 8080, "min_replicas": 2}}
    assert job_gpus(served) == 2 and job_gpus(served, {"desired_replicas": 3}) == 3
    assert job_gpus({"resources": {"gpus": 2, "nodes": 4}}) == 8

    async def price() -> Any:
        cfg = gateway_config("sqlite+aiosqlite:///unused.db")
        async with _aiohttp.ClientSession() as s:
            return REGISTRY.create(cfg.backend("modelarts"), s).gpu_hour_price(served)

    assert asyncio.run(price()) == ("modelarts.vm.gpu.t4", 0.6)
