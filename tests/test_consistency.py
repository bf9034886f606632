"""The store's consistency, end to end over real sockets: a change made on the vendor's side (a scale
through the simulator's own API) reaches GET, the events and a webhook within two sync cycles; two
PostgreSQL replicas give the same answers right after each write; a second `tjg serve` on one SQLite
file stops at once, naming the file and the process holding it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.api.http import SERVICE, SYNCS
from tests.conftest import eventually, free_port, gateway_config
from tests.gwkit import GW, start_gateway
from tests.procs import Proc, wait_http, write_config
from tests.test_sync import Receiver


def serving_spec(backend: str, name: str) -> dict[str, Any]:
    return {"name": name, "backend": backend, "kind": "inference", "image": "vllm/vllm-openai:latest",
            "serving": {"port": 8000, "max_replicas": 6}}


async def _scale_on_the_vendor(gw: GW, backend: str, vendor_id: str, replicas: int) -> None:
    """What a user does on the vendor's console: the vendor's own API, not the gateway's."""
    cfg = gw.config.backend(backend)
    if backend == "runai":
        async with aiohttp.ClientSession() as s:
            async with s.post(cfg.url + "/api/v1/token", json={
                    "grantType": "client_credentials", "clientID": "tjg-demo",
                    "clientSecret": "runai-secret-xyz"}) as r:
                token = (await r.json())["accessToken"]
            async with s.patch(f"{cfg.url}/api/v1/workloads/inferences/{vendor_id}",
                               headers={"Authorization": f"Bearer {token}"},
                               json={"spec": {"autoscaling": {"minReplicas": replicas,
                                                              "maxReplicas": replicas}}}) as r:
                assert r.status < 300, await r.text()
    else:  # ModelArts requests are AK/SK-signed: its client signs them (the request goes to the vendor API)
        client = gw.c.app[SERVICE].adapters[backend].client  # type: ignore[attr-defined]
        await client.update_service(vendor_id, {"group_configs": [{"count": replicas}]})


@pytest.mark.parametrize("backend", ["runai", "modelarts"])
async def test_a_scale_on_the_vendors_side_reaches_get_events_and_a_webhook_within_two_cycles(
        tmp_path: Path, backend: str) -> None:
    rx = Receiver()
    runner = await rx.start()
    gw = await start_gateway(gateway_config(f"sqlite+aiosqlite:///{tmp_path}/c.db", tenant_extra={
        "alpha": {"webhooks": [{"url": rx.url, "secret": "consistency-hook"}]}}))
    try:
        job = await gw.submit(serving_spec(backend, f"console-{backend}"))
        running = await gw.wait_phase(job["id"], {"RUNNING"})
        assert running["status"]["desired_replicas"] != 3
        sync = gw.c.app[SYNCS][backend]
        await _scale_on_the_vendor(gw, backend, running["backend_job_id"], 3)
        before = sync.cycles
        seen_at: list[int] = []

        async def stored() -> bool:
            _, j = await gw.call("GET", f"/v1/jobs/{job['id']}")
            if j["status"]["desired_replicas"] == 3:
                seen_at.append(sync.cycles)
                return True
            return False

        assert await eventually(stored, within=30, step=0.02)
        assert seen_at[0] - before <= 2, f"seen after {seen_at[0] - before} cycles"
        _, evs = await gw.call("GET", f"/v1/jobs/{job['id']}/events?vendor=false")
        changes = [e for e in evs["events"] if e["kind"] == "change" and "desired_replicas" in e["message"]]
        assert changes and changes[0]["source"] == "sync" and changes[0]["message"].startswith("desired_replicas:")
        assert changes[0]["message"].split(";")[0].endswith("-> 3")

        async def hooked() -> list[dict[str, Any]]:
            return [p for p in (json.loads(b) for _, b in rx.got)
                    if p["type"] == "job.change" and p["seq"] == changes[0]["seq"]]

        got = await eventually(hooked)
        assert got and got[0]["job_id"] == job["id"] and got[0]["message"] == changes[0]["message"]
    finally:
        await gw.c.close()
        await runner.cleanup()


def test_a_second_tjg_serve_on_one_sqlite_file_exits_2_naming_it(tmp_path: Path) -> None:
    db = tmp_path / "one.db"
    first_cfg = write_config(tmp_path / "a.yaml", f"sqlite+aiosqlite:///{db}", free_port(), free_port(), free_port())
    first = Proc(["serve", "--config", str(first_cfg)], tmp_path / "a.log").start()
    try:
        import asyncio

        asyncio.run(wait_http(f"http://127.0.0.1:{_port_of(first_cfg)}/healthz"))
        second_cfg = write_config(tmp_path / "b.yaml", f"sqlite+aiosqlite:///{db}", free_port(), free_port(),
                                  free_port())
        out = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(second_cfg)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert first.p is not None
        assert str(db) in lines[0] and f"process {first.p.pid}" in lines[0], lines[0]
        assert "PostgreSQL" in lines[0]
    finally:
        first.kill()


def _port_of(cfg: Path) -> int:
    import yaml

    return int(yaml.safe_load(cfg.read_text())["server"]["port"])


@pytest.mark.postgres
async def test_two_postgres_replicas_answer_alike_right_after_each_write(tmp_path: Path) -> None:
    from tests.conftest import fresh_pg_database, require_postgres

    db_url, drop = await fresh_pg_database(require_postgres())
    rp, mp = free_port(), free_port()
    a = await start_gateway(gateway_config(db_url, rp, mp))  # hosts the simulators
    b = await start_gateway(gateway_config(db_url, rp, mp, simulate=False))
    try:
        async def seen(gw: GW, job_id: str) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
            _, got = await gw.call("GET", f"/v1/jobs/{job_id}")
            _, listed = await gw.call("GET", "/v1/jobs?limit=50&deleted=true")
            _, evs = await gw.call("GET", f"/v1/jobs/{job_id}/events?vendor=false")
            row = next(j for j in listed["jobs"] if j["id"] == job_id)
            return got, row, evs["events"]

        job = await a.submit({"name": "two", "backend": "runai", "image": "python:3.11",
                              "env": {"SIM_RUN_SECONDS": "600"}})
        for gw in (b, a):  # read at once on the other replica, then on the writer: the same job
            got, row, evs = await seen(gw, job["id"])
            assert got["id"] == row["id"] == job["id"] and evs[0]["to_phase"] == "QUEUED"
        await a.wait_phase(job["id"], {"RUNNING"})
        await seen(b, job["id"])  # B has read (and may keep) the RUNNING job's answer
        status, cancelled = await b.call("POST", f"/v1/jobs/{job['id']}/cancel")
        assert status in (200, 202) and cancelled["status"]["phase"] in ("CANCELLING", "CANCELLED")
        for gw in (a, b):
            got, row, evs = await seen(gw, job["id"])
            assert got["status"]["phase"] in ("CANCELLING", "CANCELLED"), got["status"]
            assert row["status"]["phase"] in ("CANCELLING", "CANCELLED")
            assert "CANCELLING" in [e["to_phase"] for e in evs] or got["status"]["phase"] == "CANCELLED"
            assert got["updated_at"] >= cancelled["updated_at"]
        assert (await a.call("DELETE", f"/v1/jobs/{job['id']}"))[0] == 204
        for gw in (b, a):
            got, row, _ = await seen(gw, job["id"])
            assert got["deleted"] is True and row["deleted"] is True
            assert got["status"]["phase"] == "CANCELLED"
    finally:
        await b.c.close()
        await a.c.close()
        await drop()


NON_FINITE = ["Infinity", "-Infinity", "NaN", "nan", "inf", "+inf", "infinity", " NaN ", "1e999", "-1e999"]


async def _non_finite_is_a_422(gw: GW) -> None:
    for spelling in NON_FINITE:
        body = {"name": "nf", "backend": "runai", "image": "python:3.11", "resources": {"cpu": spelling}}
        status, err = await gw.call("POST", "/v1/jobs", json=body)
        assert status == 422, (spelling, err)
        assert err["errors"][0]["loc"][-2:] == ["resources", "cpu"], (spelling, err)
    # A bare number too big for a float, in the JSON text itself.
    raw = '{"name": "nf", "backend": "runai", "image": "python:3.11", "resources": {"gpus": 1e999}}'
    status, err = await gw.call("POST", "/v1/jobs", data=raw, headers={
        "Authorization": "Bearer alpha-key-123", "Content-Type": "application/json"})
    assert status == 422 and err["errors"][0]["loc"][-2:] == ["resources", "gpus"], err
    _, listed = await gw.call("GET", "/v1/jobs")
    assert listed["jobs"] == []  # nothing stored


async def test_non_finite_numbers_in_any_spelling_are_a_422_on_sqlite(gw: GW) -> None:
    await _non_finite_is_a_422(gw)


@pytest.mark.postgres
async def test_non_finite_numbers_in_any_spelling_are_a_422_on_postgres() -> None:
    from tests.conftest import fresh_pg_database, require_postgres

    db_url, drop = await fresh_pg_database(require_postgres())
    gw = await start_gateway(gateway_config(db_url))
    try:
        await _non_finite_is_a_422(gw)
    finally:
        await gw.c.close()
        await drop()


def test_the_default_config_is_found_from_any_working_directory(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "TJG_CONFIG"}
    out = subprocess.run([sys.executable, "-c", "import adapters.registry as r; r.load();"
                          "from gateway.core.config import load_config, default_config_path;"
                          "c = load_config(); print(default_config_path()); print([b.name for b in c.backends])"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    path, names = out.stdout.strip().splitlines()
    assert Path(path).is_file() and Path(path).name == "gateway.yaml"
    assert names == "['runai', 'modelarts']"
