"""Regression tests for the hardening issue: each numbered defect, on SQLite and PostgreSQL where the
store is involved. Every test here failed on the code before the fix."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.api.app import create_app, server_options
from gateway.api.guard import ConnectionGuard, GuardedSite
from gateway.api.http import STORE
from gateway.api.watch import NOTIFIER
from tests.conftest import eventually, fresh_pg_database, gateway_config, require_postgres
from tests.gwkit import ALPHA, BETA, GW, OPS, spec, start_gateway
from tests.test_sync import Receiver

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgres"])
async def hgw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GW]:
    """A gateway on each store."""
    drop = None
    if request.param == "postgres":
        url, drop = await fresh_pg_database(require_postgres())
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/tjg.db"
    g = await start_gateway(gateway_config(url))
    yield g
    await g.c.close()
    if drop is not None:
        await drop()


async def _raw(gw: GW, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
               ) -> tuple[int, Any]:
    async with gw.c.request(method, path, data=body, headers={**ALPHA, "Content-Type": "application/json",
                                                              **(headers or {})}) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


# -- 1. the vendor name cannot be overridden -------------------------------------------------------
@pytest.mark.parametrize("backend,ext,loc", [
    ("runai", {"runai": {"name": "someone-elses-job"}}, ["extensions", "runai", "name"]),
    ("runai", {"runai": {"useGivenNameAsPrefix": True}}, ["extensions", "runai", "useGivenNameAsPrefix"]),
    ("modelarts", {"modelarts": {"metadata": {"name": "other"}}}, ["extensions", "modelarts", "metadata", "name"]),
])
async def test_extensions_cannot_rename_the_vendor_job(gw: GW, backend: str, ext: dict[str, Any],
                                                       loc: list[str]) -> None:
    def writes(stats: dict[str, int]) -> int:  # (the sync's own reads, capacity included, go on meanwhile)
        return sum(v for k, v in stats.items() if not k.startswith("GET ") and "/token" not in k)

    before = writes(await gw.sim_stats(backend))
    status, body = await gw.call("POST", "/v1/jobs", json=spec(backend, "renamed", extensions=ext))
    assert status == 422 and body["errors"][0]["loc"] == loc, body
    _, listed = await gw.call("GET", "/v1/jobs", headers=OPS)
    assert listed["jobs"] == []  # nothing stored
    assert writes(await gw.sim_stats(backend)) == before  # nothing sent


# -- 2. one migration target -------------------------------------------------------------------------
async def test_concurrent_migrations_make_one_target(hgw: GW) -> None:
    job = await hgw.submit(spec("runai", "mig-race", env={"SIM_OUTCOME": "hang"}))
    await hgw.wait_phase(job["id"], {"RUNNING"})
    answers = await asyncio.gather(*(hgw.call("POST", f"/v1/jobs/{job['id']}/migrate", json={"backend": "modelarts"})
                                     for _ in range(10)))
    created = [b for s, b in answers if s == 201]
    assert len(created) == 1, [s for s, _ in answers]
    assert all(s == 409 and b["job_id"] == created[0]["id"] for s, b in answers if s != 201)
    _, listed = await hgw.call("GET", "/v1/jobs?backend=modelarts")
    assert [j["id"] for j in listed["jobs"]] == [created[0]["id"]]
    _, source = await hgw.call("GET", f"/v1/jobs/{job['id']}")
    assert source["migrated_to"] == created[0]["id"]


async def test_a_migration_replays_for_its_idempotency_key(hgw: GW) -> None:
    job = await hgw.submit(spec("runai", "mig-key", env={"SIM_OUTCOME": "hang"}))
    key = {**ALPHA, "Idempotency-Key": "move-it-once"}
    keyed = await asyncio.gather(*(hgw.call("POST", f"/v1/jobs/{job['id']}/migrate", headers=key,
                                            json={"backend": "modelarts"}) for _ in range(5)))
    ids = {b.get("id") or b.get("job_id") for _, b in keyed}
    assert len(ids) == 1 and {s for s, _ in keyed} <= {201, 409}
    async with hgw.c.post(f"/v1/jobs/{job['id']}/migrate", headers=key, json={"backend": "modelarts"}) as r:
        again = await r.json()
        assert r.status == 201 and r.headers.get("Idempotent-Replayed") == "true" and again["id"] in ids
    status, _ = await hgw.call("POST", f"/v1/jobs/{job['id']}/migrate", json={"backend": "modelarts"})
    assert status == 409  # without the key it is a second migration


# -- 3 and 4. what the store cannot hold is refused, naming the field ------------------------------------
@pytest.mark.parametrize("raw,loc", [
    ('{"name":"s","backend":"runai","image":"x","env":{"A":"\\udfff"}}', ["body", "env", "A"]),
    ('{"name":"s","backend":"runai","image":"x","env":{"A":"a\\u0000b"}}', ["body", "env", "A"]),
    ('{"name":"s","backend":"runai","image":"x","labels":{"team":"a\\u0000"}}', ["body", "labels", "team"]),
    ('{"name":"s","backend":"runai","image":"x","project":"p\\u0000"}', ["body", "project"]),
    ('{"name":"s","backend":"runai","image":"x","resources":{"cpu":Infinity}}', ["body", "resources", "cpu"]),
    ('{"name":"s","backend":"runai","image":"x","resources":{"cpu":NaN}}', ["body", "resources", "cpu"]),
    ('{"name":"s","backend":"runai","image":"x","resources":{"cpu":1e999}}', ["body", "resources", "cpu"]),
    ('{"name":"s","backend":"runai","image":"x","env":{"\\ud800":"v"}}', ["body", "env"]),
])
async def test_unstorable_json_is_refused_before_anything_is_stored(hgw: GW, raw: str, loc: list[str]) -> None:
    status, body = await _raw(hgw, "POST", "/v1/jobs", raw.encode())
    assert status == 422 and body["errors"][0]["loc"] == loc, body
    _, listed = await hgw.call("GET", "/v1/jobs", headers=OPS)
    assert listed["jobs"] == []
    assert "POST /api/v1/workloads/trainings" not in await hgw.sim_stats("runai")


@pytest.mark.parametrize("path,loc", [
    ("/v1/jobs/%00", ["path", "id"]),
    ("/v1/jobs?backend=run%00ai", ["query", "backend"]),
    ("/v1/jobs?project=p%00", ["query", "project"]),
    ("/v1/jobs?name_prefix=%00", ["query", "name_prefix"]),
    ("/v1/jobs?label=a%3Db%00", ["query", "label"]),
    ("/v1/jobs?page_token=%00abc", ["query", "page_token"]),
    ("/v1/usage?group_by=label:%00", ["query", "group_by"]),
])
async def test_nul_and_surrogates_in_the_url_are_400_on_both_stores(hgw: GW, path: str, loc: list[str]) -> None:
    status, body = await hgw.call("GET", path)
    assert status == 400 and body["errors"][0]["loc"] == loc, (status, body)


# -- 5. a log task is one of the job's tasks, and escaped --------------------------------------------------
@pytest.mark.parametrize("task", ["../../training-jobs/x", "worker-0?x=1", "worker-0\r\nX-Evil: 1", "a%3Fb",
                                  "worker-7"])
async def test_log_task_must_be_one_of_the_jobs_tasks(gw: GW, task: str) -> None:
    job = await gw.submit(spec("modelarts", "logs-task", env={"SIM_OUTCOME": "hang"}))
    await gw.wait_phase(job["id"], {"RUNNING"})
    status, body = await gw.call("GET", f"/v1/jobs/{job['id']}/logs", params={"task": task})
    assert status == 400 and body["errors"][0]["loc"] == ["query", "task"], body
    assert not any("/logs/preview" in k for k in await gw.sim_stats("modelarts"))
    status, body = await gw.call("GET", f"/v1/jobs/{job['id']}/logs", params={"task": "worker-0"})
    assert status == 200 and "worker-0" in body["content"]


def test_vendor_path_segments_are_escaped() -> None:
    from adapters.http import seg

    assert seg("../x?y=1#z") == "..%2Fx%3Fy%3D1%23z" and seg("a\r\nb") == "a%0D%0Ab"


# -- 6. deep nesting, compressed bodies, imported jobs outside the contract --------------------------------
async def test_deeply_nested_json_is_a_400(gw: GW) -> None:
    for depth in (100, 50_000):
        raw = ('{"name":"d","backend":"runai","image":"x","extensions":{"runai":' + "[" * depth + "]" * depth
               + "}}").encode()
        status, body = await _raw(gw, "POST", "/v1/jobs", raw)
        assert status == 400 and "nested" in body["detail"], (depth, status)


@pytest.mark.parametrize("encoding,compress", [("gzip", gzip.compress), ("deflate", zlib.compress),
                                               ("gzip", lambda b: b"not gzip at all"), ("br", lambda b: b)])
async def test_compressed_bodies_are_a_415(gw: GW, encoding: str, compress: Any) -> None:
    raw = compress(json.dumps(spec("runai", "zipped")).encode())
    status, body = await _raw(gw, "POST", "/v1/jobs", raw, {"Content-Encoding": encoding})
    assert status in (400, 415), (status, body)
    _, listed = await gw.call("GET", "/v1/jobs")
    assert listed["jobs"] == []


async def test_migrating_an_imported_job_outside_the_contract_is_4xx(hgw: GW) -> None:
    job = await hgw.submit(spec("runai", "imp", env={"SIM_OUTCOME": "hang"}))
    await hgw.c.app[STORE].jobs.set_fields(job["id"], origin="external",
                                           spec={**job["spec"], "labels": {"Not A Label Key!": "x" * 80}})
    for dry in ("true", "false"):
        status, body = await hgw.call("POST", f"/v1/jobs/{job['id']}/migrate?dry_run={dry}", headers=OPS,
                                      json={"backend": "modelarts"})
        assert status == 422 and body["errors"][0]["loc"][0] == "labels", (dry, status, body)


# -- 7. SSE resumes after the id it sent ----------------------------------------------------------------------
async def _sse(gw: GW, path: str, headers: dict[str, str], until: bytes, within: float = 10) -> str:
    async with gw.c.get(path, headers=headers) as r:
        assert r.status == 200, await r.text()
        seen = b""
        deadline = time.monotonic() + within
        while until not in seen and time.monotonic() < deadline:
            try:
                seen += await asyncio.wait_for(r.content.readany(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
        return seen.decode()


async def test_a_job_stream_resumes_after_its_last_event_id(gw: GW) -> None:
    job = await gw.submit(spec("runai", "resume-sse", env={"SIM_OUTCOME": "hang"}))
    await gw.wait_phase(job["id"], {"RUNNING"})
    await gw.call("POST", f"/v1/jobs/{job['id']}/cancel")
    await gw.wait_phase(job["id"], {"CANCELLED"})
    full = await _sse(gw, f"/v1/jobs/{job['id']}/events?watch=true", ALPHA, b"event: end")
    ids = [line[4:] for line in full.splitlines() if line.startswith("id: ")]
    assert ids[0] == f"{job['id']}:1" and len(ids) >= 3
    rest = await _sse(gw, f"/v1/jobs/{job['id']}/events?watch=true", {**ALPHA, "Last-Event-ID": ids[1]},
                      b"event: end")
    assert [line[4:] for line in rest.splitlines() if line.startswith("id: ")] == ids[2:]
    status, body = await gw.call("GET", f"/v1/jobs/{job['id']}/events?watch=true",
                                 headers={**ALPHA, "Last-Event-ID": "0123456789abcdef0123456789abcdef:1"})
    assert status == 400 and body["errors"][0]["loc"] == ["header", "Last-Event-ID"]


async def test_all_events_resume_and_refuse_huge_ids(hgw: GW) -> None:
    for bad in ("9" * 40, "-1", "abc", str(2 ** 31)):
        status, body = await hgw.call("GET", "/v1/events", headers={**ALPHA, "Last-Event-ID": bad})
        assert status == 400 and body["errors"][0]["loc"] == ["header", "Last-Event-ID"], (bad, status)
    job = await hgw.submit(spec("runai", "resume-all", env={"SIM_OUTCOME": "hang"}))
    await hgw.wait_phase(job["id"], {"RUNNING"})
    await hgw.call("POST", f"/v1/jobs/{job['id']}/cancel")
    await hgw.wait_phase(job["id"], {"CANCELLED"})
    text = await _sse(hgw, "/v1/events", {**ALPHA, "Last-Event-ID": "0"}, b"CANCELLED")
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert len(ids) >= 3 and ids == sorted(ids)
    again = await _sse(hgw, "/v1/events", {**ALPHA, "Last-Event-ID": str(ids[0])}, b"CANCELLED")
    assert next(int(line[4:]) for line in again.splitlines() if line.startswith("id: ")) == ids[1]


# -- 8. a slow webhook receiver delays only itself ---------------------------------------------------------------
class SlowReceiver(Receiver):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.at: list[float] = []
        self.arrived = 0  # deliveries that have reached the receiver (it may still be holding them)

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived += 1
        await asyncio.sleep(self.delay)
        self.at.append(time.monotonic())
        return await super().handle(request)


async def test_a_slow_receiver_does_not_hold_up_another_tenants_webhooks(tmp_path: Path) -> None:
    slow, fast = SlowReceiver(5.0), SlowReceiver(0.0)
    runners = [await slow.start(), await fast.start()]
    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/tjg.db", tenant_extra={
        "alpha": {"webhooks": [{"url": slow.url, "secret": "slow-secret"}]},
        "beta": {"webhooks": [{"url": fast.url, "secret": "fast-secret"}]}})
    gw = await start_gateway(cfg)
    try:
        for i in range(3):
            await gw.submit(spec("runai", f"slow-{i}"))
        assert await eventually(lambda: _arrived(slow, 1), within=15)  # alpha's receiver is now busy for a while
        started = time.monotonic()
        await gw.submit(spec("runai", "fast-one"), headers=BETA)
        assert await eventually(lambda: _got(fast, 1), within=5)
        assert fast.at[0] - started < 2.0, fast.at[0] - started
        per_job: dict[str, list[int]] = {}
        await eventually(lambda: _got(slow, 2), within=15)
        for _, body in slow.got:
            p = json.loads(body)
            per_job.setdefault(p["job_id"], []).append(p["seq"])
        assert all(seqs == sorted(seqs) for seqs in per_job.values())
    finally:
        await gw.c.close()
        for r in runners:
            await r.cleanup()


async def _got(rx: Receiver, n: int) -> bool:
    return len(rx.got) >= n


async def _arrived(rx: SlowReceiver, n: int) -> bool:
    return rx.arrived >= n


# -- 9. streams: one notifier, quiet disconnects, a per-tenant cap -------------------------------------------------
async def test_streams_share_one_poll_end_quietly_and_are_capped(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                                 ) -> None:
    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/tjg.db", log_level="info",
                         server={"host": "127.0.0.1", "port": 0, "max_streams_per_tenant": 40})
    gw = await start_gateway(cfg)
    notifier = gw.c.app[NOTIFIER]
    try:
        async with aiohttp.ClientSession() as s:
            url = str(gw.c.make_url("/v1/events"))
            streams = [await s.get(url, headers=ALPHA) for _ in range(40)]
            assert all(r.status == 200 for r in streams)
            async with s.get(url, headers=ALPHA) as over:
                assert over.status == 429 and over.headers["Retry-After"]
            async with s.get(url, headers=BETA) as other:
                assert other.status == 200  # the cap is per tenant
            before, t0 = notifier.polls, time.monotonic()

            async def polled() -> bool:
                return notifier.polls - before >= 5

            assert await eventually(polled, within=10, step=0.01)  # five polls, however long they take here
            rate = (notifier.polls - before) / (time.monotonic() - t0)
            assert rate <= 6, rate  # one store read per tick for all 41 streams, not one per stream
            job = await gw.submit(spec("runai", "fanout"))
            got = await asyncio.wait_for(_read_until(streams[0], job["id"].encode()), 5)
            assert job["id"] in got
            for r in streams:
                r.close()
            assert await eventually(lambda: _subs_at_most(notifier, 1), within=3)
    finally:
        await gw.c.close()
    out = capsys.readouterr()
    assert "unhandled_error" not in out.out + out.err and "Traceback" not in out.out + out.err


async def _read_until(r: aiohttp.ClientResponse, marker: bytes) -> str:
    seen = b""
    while marker not in seen:
        seen += await r.content.readany()
    return seen.decode()


async def _subs_at_most(notifier: Any, n: int) -> bool:
    return len(notifier.subs) <= n


# -- 10. slowloris and too many connections from one address --------------------------------------------------------
async def test_slow_heads_are_cut_and_connections_per_client_capped(tmp_path: Path) -> None:
    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/tjg.db",
                         server={"host": "127.0.0.1", "port": 0, "header_timeout_seconds": 1.0,
                                 "max_connections_per_client": 30})
    runner = web.AppRunner(create_app(cfg), access_log=None, **server_options())
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    guard = ConnectionGuard(cfg.server.header_timeout_seconds, cfg.server.max_connections_per_client)
    await GuardedSite(runner, sock, guard).start()
    try:
        slow = []
        opened = time.monotonic()
        for _ in range(25):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
            slow.append(w)
        extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(10)]

        async def over_the_cap() -> bool:
            return guard.refused >= 5

        assert await eventually(over_the_cap, within=10, step=0.02)
        refused = 0
        for rd, _ in extra:
            refused += await _closed(rd)
        assert refused >= 5 and guard.refused >= 5  # 25 slow + 5 fit under the cap of 30
        async def all_timed_out() -> bool:
            return guard.timed_out >= 25 and sum(guard.open.values()) == 0

        assert await eventually(all_timed_out, within=20)  # the header timeout, then every slow one closed
        assert time.monotonic() - opened < 10  # closed by the 1 s header timeout, not by something much later
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200  # the gateway still serves
    finally:
        await runner.cleanup()


async def _closed(rd: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(rd.read(1), 0.5) == b""
    except (TimeoutError, ConnectionError):
        return False


# -- 11. /metrics behind a key off loopback; a bad TJG_URL is one line --------------------------------------------
async def test_metrics_need_an_admin_key_when_configured(tmp_path: Path) -> None:
    for setting, host, needs in ((True, "127.0.0.1", True), ("auto", "0.0.0.0", True), ("auto", "127.0.0.1", False),
                                 (False, "0.0.0.0", False)):
        cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/m{host}{setting}.db", metrics={"require_key": setting},
                             server={"host": host, "port": 0})
        gw = await start_gateway(cfg)
        try:
            anon, _ = await gw.call("GET", "/metrics", headers={})
            user, _ = await gw.call("GET", "/metrics", headers=ALPHA)
            admin, text = await gw.call("GET", "/metrics", headers=OPS)
            assert (anon, user, admin) == ((401, 403, 200) if needs else (200, 200, 200)), (setting, host)
            assert "tjg_jobs" in text or "tjg_http_requests_total" in text
        finally:
            await gw.c.close()


def test_a_malformed_tjg_url_is_one_line_not_a_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TJG_")}
    for url in ("not-a-url", "http://[::1", "http://host:99999", "ftp://x"):
        p = subprocess.run([sys.executable, "-m", "gateway", "list"], capture_output=True, text=True, cwd=ROOT,
                           env={**env, "TJG_URL": url, "TJG_API_KEY": "k"}, timeout=60)
        assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
        assert "TJG_URL" in p.stderr, p.stderr

