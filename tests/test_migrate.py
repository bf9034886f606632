"""Migration between Run:ai and ModelArts, logs, and vendor events in the job's stream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from adapters.registry import load as load_vendors
from gateway.core.config import Config
from gateway.core.models import parse_spec
from gateway.service.migrate import convert_spec
from tests.conftest import EXAMPLES, eventually, gateway_config
from tests.gwkit import ALPHA, BETA, GW, spec, start_gateway

# Neutral field -> the Run:ai body paths it produces (for the round-trip comparison).
RUNAI_PATHS = {
    "project": ["projectId"], "image": ["spec.image"], "command": ["spec.command"], "args": ["spec.args"],
    "working_dir": ["spec.workingDir"], "env": ["spec.environmentVariables"], "labels": ["spec.labels"],
    "resources.gpus": ["spec.compute"], "resources.cpu": ["spec.compute"], "resources.memory": ["spec.compute"],
    "resources.gpu_type": ["spec.nodePools"], "resources.flavor": ["spec.nodePools"],
    "resources.nodes": ["spec.numWorkers", "spec.distributedFramework", "masterSpecSameAsWorker"],
    "distributed.framework": ["spec.distributedFramework"], "priority": ["spec.priorityClass"],
    "preemptible": ["spec.preemptibility"], "max_retries": ["spec.backoffLimit"],
    "inputs": ["spec.storage"], "outputs": ["spec.storage"],
}
IDENTITY = {"name", "spec.annotations"}  # the vendor name and job-id annotation change with the job id


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: d}


def lossy_paths(reports: list[list[Any]]) -> set[str]:
    paths: set[str] = set()
    for report in reports:
        for e in report:
            if e.outcome in ("approximated", "dropped"):
                key = e.field.split("[")[0]
                paths.update(RUNAI_PATHS.get(key, [key]))
    return paths


def runai_examples() -> list[Path]:
    return [p for p in EXAMPLES if p.stem != "modelarts-ascend"]  # Ascend exists only on ModelArts


@pytest.mark.parametrize("path", runai_examples(), ids=lambda p: p.stem)
def test_round_trip_runai_modelarts_runai(path: Path, config: Config) -> None:
    raw = yaml.safe_load(path.read_text())
    raw["backend"] = "runai"
    first = load_vendors().translate(parse_spec(raw), config.backend("runai"), "a" * 32)
    to_ma, notes1 = convert_spec(raw, "runai", "modelarts", "modelarts")
    mid = load_vendors().translate(parse_spec(to_ma), config.backend("modelarts"), "b" * 32)
    back, notes2 = convert_spec(to_ma, "modelarts", "runai", "runai")
    last = load_vendors().translate(parse_spec(back), config.backend("runai"), "c" * 32)
    assert last.path == first.path
    allowed = lossy_paths([notes1 + mid.report, notes2 + last.report])
    a, b = flatten(first.body), flatten(last.body)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            assert any(key == p or key.startswith(p + ".") for p in allowed | IDENTITY), \
                f"{key} changed in the round trip without a lossy report: {a.get(key)!r} -> {b.get(key)!r}"


def test_flavor_and_node_pool_convert_through_the_tables() -> None:
    out, notes = convert_spec({"name": "x", "backend": "runai", "image": "i",
                               "resources": {"flavor": "h100", "gpus": 8}}, "runai", "modelarts", "ma")
    assert out["resources"] == {"gpus": 8, "gpu_type": "H100"} and out["backend"] == "ma"
    assert notes[0].outcome == "approximated"
    out, notes = convert_spec({"name": "x", "backend": "ma", "image": "i",
                               "resources": {"flavor": "modelarts.p3.4xlarge.ex"}}, "modelarts", "runai", "runai")
    assert out["resources"] == {"gpus": 4, "gpu_type": "V100", "cpu": 32.0, "memory": "256Gi"}
    out, notes = convert_spec({"name": "x", "backend": "runai", "image": "i",
                               "resources": {"flavor": "mystery-pool"}}, "runai", "modelarts", "ma")
    assert notes[0].outcome == "dropped" and "flavor" not in out["resources"]


@pytest.fixture
async def gw_slow(tmp_path: Path) -> Any:
    g = await start_gateway(gateway_config(f"sqlite+aiosqlite:///{tmp_path}/m.db", speed=20.0))
    yield g
    await g.c.close()


async def test_suspend_then_migrate_with_cancel_runs_on_the_target(gw_slow: GW) -> None:
    gw = gw_slow
    job = await gw.submit(spec("runai", "mover", env={"SIM_RUN_SECONDS": "40"}, labels={"team": "x"}))  # 2 s
    await gw.wait_phase(job["id"], {"RUNNING"})
    assert (await gw.call("POST", f"/v1/jobs/{job['id']}/suspend"))[0] == 202
    await gw.wait_phase(job["id"], {"SUSPENDED"})
    status, new = await gw.call("POST", f"/v1/jobs/{job['id']}/migrate",
                                json={"backend": "modelarts", "source_action": "cancel"})
    assert status == 201, new
    assert new["backend"] == "modelarts" and new["migrated_from"] == job["id"] and new["labels"] == {"team": "x"}
    done = await gw.wait_phase(new["id"], {"SUCCEEDED", "FAILED"})
    assert done["status"]["phase"] == "SUCCEEDED"
    old = await gw.wait_phase(job["id"], {"CANCELLED"})
    assert old["status"]["phase"] == "CANCELLED" and old["migrated_to"] == new["id"]
    status, body = await gw.call("POST", f"/v1/jobs/{job['id']}/migrate", json={"backend": "modelarts"})
    assert status == 409 and "already migrated" in body["detail"]


async def test_migrate_dry_run_compares_both_vendors(gw: GW) -> None:
    job = await gw.submit(spec("runai", "dry", env={"SIM_OUTCOME": "hang"}, labels={"a": "b"},
                               resources={"gpus": 0.5}))
    status, res = await gw.call("POST", f"/v1/jobs/{job['id']}/migrate?dry_run=true",
                                json={"backend": "modelarts", "overrides": {"env": {"K": "v"}}})
    assert status == 200
    assert res["backend"] == "modelarts" and res["source"]["backend"] == "runai"
    assert res["request"]["body"]["algorithm"]["environments"] == {"SIM_OUTCOME": "hang", "K": "v"}
    by = {c["field"]: c for c in res["comparison"]}
    assert by["labels"]["source"]["outcome"] == "exact" and by["labels"]["target"]["outcome"] == "dropped"
    assert by["resources.gpus"]["target"]["outcome"] == "approximated"
    status, body = await gw.call("POST", f"/v1/jobs/{job['id']}/migrate?dry_run=true",
                                 json={"backend": "modelarts", "strict": True})
    assert status == 422 and ["labels"] in [e["loc"] for e in body["errors"]]
    status, body = await gw.call("POST", f"/v1/jobs/{job['id']}/migrate", json={"backend": "runai"})
    assert status == 422 and body["errors"][0]["loc"] == ["backend"]
    status, body = await gw.call("POST", f"/v1/jobs/{job['id']}/migrate", json={"backend": "modelarts",
                                                                                "source_action": "pause"})
    assert status == 422 and body["errors"][0]["loc"] == ["source_action"]
    status, _ = await gw.call("POST", f"/v1/jobs/{job['id']}/migrate", json={"backend": "modelarts"},
                              headers=BETA)
    assert status == 404
    _, page = await gw.call("GET", "/v1/jobs")
    assert len(page["jobs"]) == 1  # dry runs create nothing


async def test_migrate_suspend_is_refused_where_the_source_cannot_pause(gw: GW) -> None:
    job = await gw.submit(spec("modelarts", "ma-src", env={"SIM_OUTCOME": "hang"}))
    status, body = await gw.call("POST", f"/v1/jobs/{job['id']}/migrate",
                                 json={"backend": "runai", "source_action": "suspend"})
    assert status == 409 and "cannot be paused" in body["detail"]
    _, page = await gw.call("GET", "/v1/jobs")
    assert len(page["jobs"]) == 1


async def test_logs_and_vendor_events(gw: GW) -> None:
    ma = await gw.submit(spec("modelarts", "logged", env={"SIM_RUN_SECONDS": "0.5"}))
    await gw.wait_phase(ma["id"], {"SUCCEEDED"})
    status, logs = await gw.call("GET", f"/v1/jobs/{ma['id']}/logs?tail=2")
    assert status == 200 and logs["task"] == "worker-0" and len(logs["content"].splitlines()) == 2
    status, evs = await gw.call("GET", f"/v1/jobs/{ma['id']}/events")
    kinds = {(e["kind"], e["source"]) for e in evs["events"]}
    assert ("vendor", "modelarts") in kinds and ("transition", "sync") in kinds
    ats = [e["at"] for e in evs["events"]]
    assert ats == sorted(ats)
    _, only = await gw.call("GET", f"/v1/jobs/{ma['id']}/events?vendor=false")
    assert {e["kind"] for e in only["events"]} == {"transition"}
    ra = await gw.submit(spec("runai", "no-logs", env={"SIM_OUTCOME": "hang"}))
    status, body = await gw.call("GET", f"/v1/jobs/{ra['id']}/logs")
    assert status == 409 and "no log endpoint" in body["detail"]
    _, evs = await gw.call("GET", f"/v1/jobs/{ra['id']}/events")
    assert any(e["kind"] == "vendor" and e["source"] == "runai" for e in evs["events"])


def test_cli_logs_prints_the_preview(tmp_path: Path) -> None:
    """`tjg logs` against a running gateway (started in a thread) prints the ModelArts preview."""
    import asyncio

    import aiohttp

    from gateway.api.app import create_app
    from tests.conftest import AppThread

    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    with AppThread(lambda: create_app(cfg)) as gw:
        async def submit() -> str:
            async with aiohttp.ClientSession() as s:
                async with s.post(gw.url + "/v1/jobs", headers=ALPHA,
                                  json=spec("modelarts", "cli-logs", env={"SIM_RUN_SECONDS": "0.5"})) as r:
                    job_id = str((await r.json())["id"])
                for _ in range(200):
                    async with s.get(f"{gw.url}/v1/jobs/{job_id}", headers=ALPHA) as r:
                        if (await r.json())["status"]["phase"] == "SUCCEEDED":
                            break
                    await asyncio.sleep(0.05)
            return job_id

        job_id = asyncio.run(submit())
        out = subprocess.run([sys.executable, "-m", "gateway", "logs", job_id, "--url", gw.url, "--api-key",
                              "alpha-key-123"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "[ModelArts Service Log] worker-0: job phase Running" in out.stdout
        assert "loss" in out.stdout
        dry = subprocess.run([sys.executable, "-m", "gateway", "migrate", job_id, "--to", "runai", "--dry-run",
                              "--url", gw.url, "--api-key", "alpha-key-123"], capture_output=True, text=True,
                             timeout=60)
        assert dry.returncode == 0 and "modelarts -> runai" in dry.stdout and "FIELD" in dry.stdout


async def _faults(gw: GW, backend: str, rates: dict[str, float]) -> None:
    async with aiohttp.ClientSession() as s, s.put(gw.config.backend(backend).url + "/_sim/faults",
                                                   json=rates) as r:
        assert r.status == 200


async def test_a_migrations_source_action_is_owed_until_done_by_the_retry_or_by_recovery(gw: GW) -> None:
    """The target is created but the source's cancel cannot reach the vendor (as if the process died between
    the two): the cancel stays owed, and the client's retry with the same key, or recovery, does it once."""
    from gateway.api.http import SERVICE
    from gateway.background.reconcile import reconcile_step

    svc = gw.c.app[SERVICE]
    sources = []
    for name in ("by-retry", "by-recovery"):
        job = await gw.submit(spec("runai", name, env={"SIM_OUTCOME": "hang"}))
        await gw.wait_phase(job["id"], {"RUNNING"})
        sources.append(job["id"])
    await _faults(gw, "runai", {"http503": 1.0})  # every Run:ai call fails: the cancels cannot be sent
    targets = []
    for i, source in enumerate(sources):
        status, new = await gw.call("POST", f"/v1/jobs/{source}/migrate", json={
            "backend": "modelarts", "source_action": "cancel"}, headers={**ALPHA, "Idempotency-Key": f"mig-{i}"})
        assert status == 201 and new["warnings"] and "tried again" in new["warnings"][0], new
        targets.append(new["id"])
        assert (await svc.store.jobs.get(source))["source_action"] == "cancel"
    await _faults(gw, "runai", {})
    # The client retries the first with its key (until Run:ai's circuit breaker lets calls through again):
    # the same target each time, and the source's cancel once it can be sent.
    async def retried() -> bool:
        status, again = await gw.call("POST", f"/v1/jobs/{sources[0]}/migrate", json={
            "backend": "modelarts", "source_action": "cancel"}, headers={**ALPHA, "Idempotency-Key": "mig-0"})
        assert status == 201 and again["id"] == targets[0]
        return (await svc.store.jobs.get(sources[0]))["source_action"] is None

    assert await eventually(retried, within=30, step=0.5)
    row = await svc.store.jobs.get(sources[0])
    assert row["source_action"] is None and row["cancel_requested"] and row["phase"] in ("CANCELLING", "CANCELLED")
    # Nobody retries the second: recovery (the reconcile loop, here with no grace time) does it.
    step = reconcile_step(svc, gw.config.model_copy(update={"replica": gw.config.replica.model_copy(
        update={"reconcile_after": 0.0001})}))
    async def recovered() -> bool:
        await step()
        return (await svc.store.jobs.get(sources[1]))["source_action"] is None

    assert await eventually(recovered, within=30, step=0.5)
    row = await svc.store.jobs.get(sources[1])
    assert row["source_action"] is None and row["cancel_requested"]
    for source, target in zip(sources, targets, strict=True):
        done = await gw.wait_phase(source, {"CANCELLED"})
        assert done["status"]["phase"] == "CANCELLED" and done["migrated_to"] == target
    _, listed = await gw.call("GET", "/v1/jobs?backend=modelarts")
    assert sorted(j["id"] for j in listed["jobs"]) == sorted(targets)  # one target each


async def test_a_migrate_racing_a_delete_makes_no_target_or_a_linked_one_and_says_which(gw: GW) -> None:
    """Issue 29: migrate and delete of one job at once. Either the migrate answers 409 and no target exists
    anywhere, or it answers 201 with a target linked to the source; never a 409 with a target running."""
    from gateway.api.http import SERVICE
    from tests.procs import listed_names

    outcomes = []
    for i in range(8):
        src = await gw.submit(spec("runai", f"race-{i}", env={"SIM_OUTCOME": "hang"}))
        await gw.wait_phase(src["id"], {"RUNNING"})
        body = {"backend": "modelarts", "source_action": "cancel"}
        (m_status, moved), (d_status, _) = await asyncio.gather(
            gw.call("POST", f"/v1/jobs/{src['id']}/migrate", json=body),
            gw.call("DELETE", f"/v1/jobs/{src['id']}"))
        assert d_status in (200, 202, 204), d_status
        _, after = await gw.call("GET", f"/v1/jobs/{src['id']}")
        on_ma = [n for n in await listed_names(gw.c.app[SERVICE].adapters["modelarts"])
                 if n.startswith(f"race-{i}-")]
        if m_status == 201:
            assert after["migrated_to"] == moved["id"] and moved["migrated_from"] == src["id"], (after, moved)
            assert len(on_ma) == 1, on_ma
        else:
            assert m_status in (404, 409), (m_status, moved)
            assert after["migrated_to"] is None and on_ma == [], (after, on_ma)
        outcomes.append(m_status)
    # A job deleted before the migrate arrives is not migrated: nothing made, a 409 that says why.
    src = await gw.submit(spec("runai", "race-late", env={"SIM_OUTCOME": "hang"}))
    status, _ = await gw.call("DELETE", f"/v1/jobs/{src['id']}")
    assert status in (200, 202, 204)
    status, gone = await gw.call("POST", f"/v1/jobs/{src['id']}/migrate", json={"backend": "modelarts"})
    assert status == 409 and "deleted" in gone["detail"], (status, gone)
    assert not [n for n in await listed_names(gw.c.app[SERVICE].adapters["modelarts"]) if n.startswith("race-late")]
