"""A world that says no, end to end over real sockets: full pools, quotas, preemption and failures on both
simulators, and the gateway saying why (status.reason, `why`, events, webhooks, TES)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import eventually, gateway_config
from tests.gwkit import GW, start_gateway
from tests.test_sync import Receiver

# Both backends read their capacity often, so `why` sees it within a test's patience.
FAST = {"capacity_interval": 0.3, "sync_interval": 0.3}
HANG = {"SIM_OUTCOME": "hang"}


def job(backend: str, name: str, gpus: float, env: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    return {"name": name, "backend": backend, "image": "python:3.11", "command": ["python", "train.py"],
            "env": env or HANG, "resources": {"gpus": gpus, "gpu_type": "A100"}, **kw}


async def gateway(tmp_path: Path, runai: dict[str, Any], modelarts: dict[str, Any], **kw: Any) -> GW:
    return await start_gateway(gateway_config(
        f"sqlite+aiosqlite:///{tmp_path}/s.db",
        per_backend={"runai": {**FAST, "simulator": runai}, "modelarts": {**FAST, "simulator": modelarts}}, **kw))


async def until_status(gw: GW, job_id: str, ok: Any, within: float = 30) -> dict[str, Any]:
    """The job's status once `ok(status)` holds (or the last one seen, for the assert to show)."""
    seen: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal seen
        _, j = await gw.call("GET", f"/v1/jobs/{job_id}")
        seen = j["status"]
        return bool(ok(seen))

    await eventually(check, within=within, step=0.05)
    return seen


@pytest.mark.parametrize("backend,other", [("runai", "modelarts"), ("modelarts", "runai")])
async def test_a_full_pool_keeps_the_next_job_queued_with_no_capacity_until_a_job_ends(
        tmp_path: Path, backend: str, other: str) -> None:
    # One A100 GPU's worth on the backend under test, 8 free on the other.
    gw = await gateway(tmp_path, runai={"gpus": {"a100": 1 if backend == "runai" else 8}},
                       modelarts={"gpus": {"modelarts.vm.gpu.a100.1": 1 if backend == "modelarts" else 8}})
    try:
        first = await gw.submit(job(backend, "fills-it", 1))
        await gw.wait_phase(first["id"], {"RUNNING"})
        waiting = await gw.submit(job(backend, "waits", 1))
        st = await until_status(gw, waiting["id"], lambda s: s.get("reason") == "no-capacity")
        assert st["phase"] == "QUEUED" and st["reason"] == "no-capacity", st
        assert st["pending_since"] and st["reason_message"]

        async def why_names_the_other() -> dict[str, Any] | None:
            _, w = await gw.call("GET", f"/v1/jobs/{waiting['id']}/why")
            seen = {c["backend"]: c for c in w["capacity"]}
            ok = (seen[other]["free_gpus"] or 0) >= 1 and seen[backend]["free_gpus"] == 0 \
                and any(s.startswith(f"{other} has") for s in w["suggestions"])
            return w if ok else None

        why = await eventually(why_names_the_other)
        assert why, "why never named the other backend's free GPUs"
        assert why["reason"] == "no-capacity" and why["phase"] == "QUEUED" and why["since"]
        assert f"tjg migrate {waiting['id']} --to {other}" in " ".join(why["suggestions"])
        # The first ends: the waiting one starts.
        status, _ = await gw.call("POST", f"/v1/jobs/{first['id']}/cancel")
        assert status in (200, 202)
        started = await gw.wait_phase(waiting["id"], {"STARTING", "RUNNING"})
        assert started["status"]["phase"] in ("STARTING", "RUNNING") and started["status"]["reason"] is None
        _, evs = await gw.call("GET", f"/v1/jobs/{waiting['id']}/events?vendor=false")
        queued = [e for e in evs["events"] if e["to_phase"] == "QUEUED" and e.get("reason") == "no-capacity"]
        assert queued, evs
    finally:
        await gw.c.close()


async def test_quota_non_preemptible_waits_and_over_quota_training_is_preempted_then_runs_again(
        tmp_path: Path) -> None:
    gw = await gateway(tmp_path, runai={"gpus": {"a100": 4}, "quota": {"1": 2, "2": 2}}, modelarts={})
    try:
        over = await gw.submit(job("runai", "over-quota", 4, project="1"))  # a training: preemptible
        await gw.wait_phase(over["id"], {"RUNNING"})
        mine = await gw.submit(job("runai", "in-quota", 2, project="2"))
        st = await until_status(gw, over["id"], lambda s: s.get("reason") == "preempted")
        assert (st["phase"], st["reason"]) == ("QUEUED", "preempted"), st
        await gw.wait_phase(mine["id"], {"RUNNING"})
        # Non-preemptible work over its project's quota waits, whatever is free.
        np = await gw.submit(job("runai", "non-preemptible", 4, project="2", preemptible=False))
        st = await until_status(gw, np["id"], lambda s: s.get("reason") == "quota-exceeded")
        assert (st["phase"], st["reason"]) == ("QUEUED", "quota-exceeded"), st
        assert "non-preemptible" in (st["reason_message"] or "")
        await gw.call("POST", f"/v1/jobs/{np['id']}/cancel")
        # The in-quota job ends: the preempted one runs again, never having FAILED.
        await gw.call("POST", f"/v1/jobs/{mine['id']}/cancel")
        back = await gw.wait_phase(over["id"], {"RUNNING"})
        assert back["status"]["phase"] == "RUNNING"
        _, evs = await gw.call("GET", f"/v1/jobs/{over['id']}/events?vendor=false")
        path = [(e["from_phase"], e["to_phase"], e.get("reason")) for e in evs["events"] if e["kind"] == "transition"]
        assert ("RUNNING", "QUEUED", "preempted") in path, path
        assert path[-1][1] == "RUNNING" and all(to != "FAILED" for _, to, _ in path)
        # The vendor's own record of it: Run:ai's Preempted event.
        _, vendor = await gw.call("GET", f"/v1/jobs/{over['id']}/events")
        assert any(e["kind"] == "vendor" and e.get("reason") == "Preempted" for e in vendor["events"])
    finally:
        await gw.c.close()


# (SIM_OUTCOME, extra env, neutral reason, exit code, TES state) as each vendor reports the failure: the
# platform's failures are TES SYSTEM_ERROR, the program's EXECUTOR_ERROR.
FAILURES = [("image-pull", {}, "image-pull", None, "SYSTEM_ERROR"), ("oom", {}, "oom", 137, "EXECUTOR_ERROR"),
            ("node-failure", {}, "node-failure", None, "SYSTEM_ERROR"),
            ("failed", {"SIM_EXIT_CODE": "3"}, "user-error", 3, "EXECUTOR_ERROR")]


@pytest.mark.parametrize("backend", ["runai", "modelarts"])
async def test_failures_end_with_their_reason_everywhere(tmp_path: Path, backend: str) -> None:
    rx = Receiver()
    runner = await rx.start()
    gw = await gateway(tmp_path, runai={}, modelarts={}, tenant_extra={
        "alpha": {"webhooks": [{"url": rx.url, "secret": "reasons-hook"}]}})
    try:
        ids = {}
        for outcome, env, *_ in FAILURES:
            made = await gw.submit(job(backend, f"fails-{outcome}", 1,
                                       env={"SIM_OUTCOME": outcome, "SIM_RUN_SECONDS": "1", **env}))
            ids[outcome] = made["id"]
        for outcome, _, reason, code, state in FAILURES:
            jid = ids[outcome]
            ended = await gw.wait_phase(jid, {"FAILED", "SUCCEEDED", "CANCELLED"})
            st = ended["status"]
            assert (st["phase"], st["reason"], st["exit_code"]) == ("FAILED", reason, code), (outcome, st)
            assert st["reason_message"]
            _, evs = await gw.call("GET", f"/v1/jobs/{jid}/events?vendor=false")
            last = [e for e in evs["events"] if e["kind"] == "transition"][-1]
            assert (last["to_phase"], last["reason"]) == ("FAILED", reason)

            async def hooked(seq: int = last["seq"], job_id: str = jid) -> list[dict[str, Any]]:
                return [p for p in (json.loads(b) for _, b in rx.got) if p["job_id"] == job_id and p["seq"] == seq]

            got = await eventually(hooked)
            assert got and got[0]["reason"] == reason and got[0]["to_phase"] == "FAILED"
            _, task = await gw.call("GET", f"/ga4gh/tes/v1/tasks/{jid}?view=FULL")
            assert task["state"] == state, (outcome, task["state"])
            assert any(line.startswith(f"reason: {reason}") for line in task["logs"][0]["system_logs"]), task
            _, why = await gw.call("GET", f"/v1/jobs/{jid}/why")
            assert why["reason"] == reason and why["terminal"] and why["suggestions"]
    finally:
        await gw.c.close()
        await runner.cleanup()


async def test_capacity_endpoint_reads_the_vendors_own_apis(tmp_path: Path) -> None:
    gw = await gateway(tmp_path, runai={"gpus": {"a100": 4, "h100": 2}, "quota": {"1": 3}},
                       modelarts={"gpus": {"modelarts.vm.gpu.a100.4": 8}})
    try:
        made = await gw.submit(job("runai", "holds-two", 2, project="1"))
        await gw.wait_phase(made["id"], {"RUNNING"})

        async def runai_seen() -> dict[str, Any] | None:
            _, cap = await gw.call("GET", "/v1/backends/runai/capacity")
            pools = {p["pool"]: p for p in cap["pools"]}
            return cap if pools.get("a100", {}).get("free_gpus") == 2 else None

        cap = await eventually(runai_seen)
        assert cap, "the holding job never showed in the capacity"
        pools = {p["pool"]: p for p in cap["pools"]}
        assert pools["a100"] == {"pool": "a100", "gpu_type": "A100", "gpus_per_node": None, "total_gpus": 4.0,
                                 "free_gpus": 2.0, "queued": None}
        assert pools["h100"]["gpu_type"] == "H100" and pools["h100"]["free_gpus"] == 2.0
        quota = {(q["project"], q["pool"]): q for q in cap["quotas"]}
        assert quota[("1", "a100")]["deserved_gpus"] == 3.0 and quota[("1", "a100")]["used_gpus"] == 2.0
        assert cap["age_seconds"] is not None and cap["age_seconds"] < 30 and cap["error"] is None
        _, ma = await gw.call("GET", "/v1/backends/modelarts/capacity")
        flavors = {p["pool"]: p for p in ma["pools"]}
        assert flavors["modelarts.vm.gpu.a100.4"]["free_gpus"] == 8.0  # 2 nodes of 4
        assert flavors["modelarts.vm.gpu.a100.4"]["gpu_type"] == "A100"
        status, err = await gw.call("GET", "/v1/backends/nope/capacity")
        assert status == 404 and "runai" in err["detail"]
        status, _ = await gw.call("GET", "/v1/backends/runai/capacity?fresh=1")
        assert status == 400
    finally:
        await gw.c.close()


async def test_preempt_through_the_simulators_api(tmp_path: Path) -> None:
    """POST /_sim/preempt: Run:ai sends a training back to Pending (QUEUED, preempted); ModelArts ends it."""
    gw = await gateway(tmp_path, runai={}, modelarts={})
    try:
        for backend, phase in (("runai", "QUEUED"), ("modelarts", "FAILED")):
            made = await gw.submit(job(backend, f"preempt-{backend}", 1))
            running = await gw.wait_phase(made["id"], {"RUNNING"})
            url = gw.config.backend(backend).url
            async with aiohttp.ClientSession() as s, \
                    s.post(f"{url}/_sim/preempt/{running['backend_job_id']}") as r:
                assert r.status == 200, await r.text()
            st = await until_status(gw, made["id"], lambda s: s.get("reason") == "preempted")
            assert st["reason"] == "preempted" and st["phase"] in (phase, "RUNNING", "STARTING"), st
    finally:
        await gw.c.close()
