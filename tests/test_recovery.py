"""Managed recovery end to end over real sockets: a preempted training fails over to the other vendor with its
checkpoint, the retry rules tell a user's bug from a listed exit code, and max_attempts and within stop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.api.http import SERVICE
from gateway.core.adapter import Handle
from tests.conftest import eventually
from tests.gwkit import ALPHA, GW
from tests.test_scarcity import gateway, job, until_status
from tests.test_sync import Receiver, read_sse


def ended(s: dict[str, Any]) -> bool:
    return bool(s.get("terminal"))


async def vendor_env(gw: GW, backend: str, vendor_id: str, kind: str = "training") -> dict[str, str]:
    """The environment the vendor holds for one of its jobs, read back through its own API."""
    adapter = gw.c.app[SERVICE].adapters[backend]
    got = await adapter.get(Handle(vendor_id, "", kind))
    assert got is not None
    full = await adapter.describe(got)
    assert full.spec is not None, full
    return dict(full.spec.get("env") or {})


async def test_a_preempted_training_fails_over_to_modelarts_with_its_checkpoint(tmp_path: Path) -> None:
    # Run:ai has one A100: the training takes it, a second job waits for it and gets it on the preemption,
    # so Run:ai is full when the next attempt is placed; ModelArts has eight.
    gw = await gateway(tmp_path, runai={"gpus": {"a100": 1}}, modelarts={"gpus": {"modelarts.vm.gpu.a100.1": 8}})
    try:
        made = await gw.submit(job("runai", "resumable", 1, env={"SIM_OUTCOME": "hang,completed",
                                                                 "SIM_RUN_SECONDS": "20"},
                                   retry={"on": ["preempted"], "failover": True, "max_attempts": 3},
                                   checkpoint={"uri": "pvc://ckpt/run1"}))
        assert made["attempt"] == 1
        first = await gw.wait_phase(made["id"], {"RUNNING"})
        assert first["status"]["phase"] == "RUNNING", first
        env1 = await vendor_env(gw, "runai", first["backend_job_id"])
        assert env1["TJG_ATTEMPT"] == "1" and env1["TJG_CHECKPOINT_URI"] == "pvc://ckpt/run1", env1
        hog = await gw.submit(job("runai", "hog", 1))
        await until_status(gw, hog["id"], lambda s: s.get("reason") == "no-capacity")
        url = gw.config.backend("runai").url
        async with aiohttp.ClientSession() as s, s.post(f"{url}/_sim/preempt/{first['backend_job_id']}") as r:
            assert r.status == 200, await r.text()

        final = await until_status(gw, made["id"], ended, within=60)
        assert final["phase"] == "SUCCEEDED", final
        _, done = await gw.call("GET", f"/v1/jobs/{made['id']}")
        assert done["attempt"] == 2 and done["backend"] == "modelarts", done
        a1, a2 = done["attempts"]
        assert (a1["n"], a1["backend"], a1["reason"]) == (1, "runai", "preempted"), a1
        assert (a2["n"], a2["backend"], a2["phase"]) == (2, "modelarts", "SUCCEEDED"), a2
        assert a1["gpu_hours"] > 0 and a2["gpu_hours"] > 0, done["attempts"]
        assert a2["vendor_name"].startswith("resumable-a2-")
        env2 = await vendor_env(gw, "modelarts", a2["backend_job_id"])
        assert env2["TJG_ATTEMPT"] == "2", env2
        assert env2["TJG_CHECKPOINT_URI"] == "obs://ckpt-bucket/run1", env2  # mappings/storage.yaml

        # The first attempt's vendor job was stopped on Run:ai, not left requeued there.
        async def stopped() -> bool:
            got = await gw.c.app[SERVICE].adapters["runai"].get(Handle(a1["backend_job_id"], "", "training"))
            return got is None or got.status.terminal
        assert await eventually(stopped, within=30)
        # Events say it; usage counts both attempts, each on its own backend.
        _, evs = await gw.call("GET", f"/v1/jobs/{made['id']}/events?vendor=false")
        assert any(e.get("reason") == "recovering" for e in evs["events"]), evs
        assert any("attempt 2 on modelarts" in (e["message"] or "") for e in evs["events"]), evs
        # TES: one TesTaskLog per attempt, each naming its backend and vendor job.
        _, task = await gw.call("GET", f"/ga4gh/tes/v1/tasks/{made['id']}?view=FULL")
        assert [(lg["metadata"]["attempt"], lg["metadata"]["backend"], lg["metadata"].get("vendor_job_id"))
                for lg in task["logs"]] == [("1", "runai", a1["backend_job_id"]),
                                            ("2", "modelarts", a2["backend_job_id"])], task["logs"]
        assert task["state"] == "COMPLETE" and task["logs"][1]["end_time"] and task["logs"][0]["end_time"]
        assert any("preempted" in line for line in task["logs"][0]["system_logs"]), task["logs"][0]
        _, use = await gw.call("GET", "/v1/usage?group_by=backend", headers={"Authorization": "Bearer ops-key-789"})
        per = {g["key"]: g["gpu_hours"] for g in use["groups"]}
        # (The hog ran on Run:ai too; ModelArts ran only the second attempt.)
        assert per["runai"] >= a1["gpu_hours"] and abs(per["modelarts"] - a2["gpu_hours"]) < 1e-5, (use, a1, a2)
    finally:
        await gw.c.close()


@pytest.mark.parametrize("backend", ["runai", "modelarts"])
async def test_a_users_error_ends_after_one_attempt_and_a_listed_exit_code_is_retried(
        tmp_path: Path, backend: str) -> None:
    gw = await gateway(tmp_path, runai={}, modelarts={})
    rules = {"on": ["preempted", "node-failure"], "exit_codes": [3]}
    try:
        bug = await gw.submit(job(backend, "bug", 1, env={"SIM_OUTCOME": "failed", "SIM_EXIT_CODE": "1",
                                                          "SIM_RUN_SECONDS": "2"}, retry=rules))
        resume = await gw.submit(job(backend, "resume", 1, env={"SIM_OUTCOME": "failed,completed",
                                                                "SIM_EXIT_CODE": "3", "SIM_RUN_SECONDS": "2"},
                                     retry=rules))
        st = await until_status(gw, bug["id"], ended)
        assert (st["phase"], st["reason"], st["retry_outcome"]) == ("FAILED", "user-error", "not-retryable"), st
        _, got = await gw.call("GET", f"/v1/jobs/{bug['id']}")
        assert got["attempt"] == 1 and len(got["attempts"]) == 1, got["attempts"]
        st = await until_status(gw, resume["id"], ended)
        assert st["phase"] == "SUCCEEDED", st
        _, got = await gw.call("GET", f"/v1/jobs/{resume['id']}")
        a1, a2 = got["attempts"]
        assert (a1["phase"], a1["exit_code"], a2["phase"], a2["backend"]) == ("FAILED", 3, "SUCCEEDED", backend), got
    finally:
        await gw.c.close()


async def test_max_attempts_and_within_stop_the_retries(tmp_path: Path) -> None:
    rx = Receiver()
    runner = await rx.start()
    gw = await gateway(tmp_path, runai={}, modelarts={}, tenant_extra={
        "alpha": {"webhooks": [{"url": rx.url, "secret": "attempts-hook"}]}})
    try:
        spent = await gw.submit(job("modelarts", "spent", 1, env={"SIM_OUTCOME": "node-failure",
                                                                  "SIM_RUN_SECONDS": "2"},
                                    retry={"on": ["node-failure"], "max_attempts": 2}))
        late = await gw.submit(job("runai", "late", 1, env={"SIM_OUTCOME": "node-failure", "SIM_RUN_SECONDS": "40"},
                                   retry={"on": ["node-failure"], "max_attempts": 5, "within": "1s"}))
        async with gw.c.get(f"/v1/jobs/{spent['id']}/events?watch=true", headers=ALPHA) as stream:
            seen = await read_sse(stream, until_event="end", within=60)
        st = await until_status(gw, spent["id"], ended, within=60)
        assert (st["phase"], st["reason"], st["retry_outcome"]) == ("FAILED", "node-failure", "max-attempts"), st
        assert "max_attempts (2) spent" in st["message"], st
        # SSE and webhooks carry each attempt: its end (reason recovering) and the next one's start.
        said = [(e, d.get("reason"), d.get("message") or "") for e, d in seen]
        assert any(r == "recovering" and "attempt 1 failed (node-failure)" in m for _, r, m in said), said
        assert any(e == "attempt" and m.startswith("attempt 2 on modelarts") for e, _, m in said), said

        async def hooked() -> list[dict[str, Any]]:
            got = [json.loads(b) for _, b in rx.got]
            return [g for g in got if g["job_id"] == spent["id"] and g["type"] == "job.attempt"]
        assert await eventually(hooked, within=30)
        _, got = await gw.call("GET", f"/v1/jobs/{spent['id']}")
        assert [a["n"] for a in got["attempts"]] == [1, 2] and got["attempt"] == 2
        assert all(a["reason"] == "node-failure" for a in got["attempts"]), got["attempts"]
        st = await until_status(gw, late["id"], ended, within=60)
        assert (st["phase"], st["reason"], st["retry_outcome"]) == ("FAILED", "node-failure", "within"), st
        _, got = await gw.call("GET", f"/v1/jobs/{late['id']}")
        assert len(got["attempts"]) == 1
    finally:
        await gw.c.close()
        await runner.cleanup()


async def test_a_cancel_between_attempts_ends_the_job_and_no_attempt_follows(tmp_path: Path) -> None:
    gw = await gateway(tmp_path, runai={}, modelarts={})
    try:
        made = await gw.submit(job("runai", "flaky", 1, env={"SIM_OUTCOME": "node-failure", "SIM_RUN_SECONDS": "2"},
                                   retry={"on": ["node-failure"], "max_attempts": 50}))
        await until_status(gw, made["id"], lambda s: (s.get("attempt") or 1) >= 2)
        status, _ = await gw.call("POST", f"/v1/jobs/{made['id']}/cancel")
        assert status in (200, 202)
        st = await until_status(gw, made["id"], ended)
        assert st["phase"] == "CANCELLED", st
        _, got = await gw.call("GET", f"/v1/jobs/{made['id']}")
        n = got["attempt"]
        adapter = gw.c.app[SERVICE].adapters["runai"]
        from tests.procs import listed_names

        async def settled() -> bool:  # every attempt's vendor job has ended; none beyond the last
            names = [x for x in await listed_names(adapter) if x.startswith("flaky")]
            return len(names) <= n
        assert await eventually(settled)
        for a in got["attempts"]:
            if a["backend_job_id"]:
                vj = await adapter.get(Handle(a["backend_job_id"], "", "training"))
                assert vj is None or vj.status.terminal or vj.status.phase == "CANCELLING", (a, vj)
    finally:
        await gw.c.close()
