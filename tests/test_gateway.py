"""The gateway's HTTP API end to end: real sockets, in-process simulators, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import fresh_pg_database, gateway_config, require_postgres
from tests.gwkit import ALPHA, BETA, GW, OPS, spec, start_gateway


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store_gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GW]:
    drop = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/tjg.db"
    else:
        url, drop = await fresh_pg_database(require_postgres())
    g = await start_gateway(gateway_config(url))
    yield g
    await g.c.close()
    if drop is not None:
        await drop()


async def test_end_to_end_both_backends_succeed(any_store_gw: GW) -> None:
    gw = any_store_gw
    r = await gw.submit(spec("runai", "e2e-runai", labels={"team": "a"}))
    m = await gw.submit(spec("modelarts", "e2e-ma"))
    assert r["status"]["phase"] == "QUEUED" and r["backend_job_id"]
    for job in (r, m):
        done = await gw.wait_phase(job["id"], {"SUCCEEDED", "FAILED"})
        assert done["status"]["phase"] == "SUCCEEDED" and done["status"]["terminal"]
    _, page = await gw.call("GET", "/v1/jobs")
    assert {j["status"]["phase"] for j in page["jobs"]} == {"SUCCEEDED"}
    _, evs = await gw.call("GET", f"/v1/jobs/{r['id']}/events?vendor=false")
    phases = [e["to_phase"] for e in evs["events"]]
    assert phases[0] == "QUEUED" and phases[-1] == "SUCCEEDED"
    assert [e["seq"] for e in evs["events"]] == list(range(1, len(phases) + 1))


async def test_auth_and_tenant_isolation(gw: GW) -> None:
    assert (await gw.call("GET", "/v1/jobs", headers={}))[0] == 401
    status, body = await gw.call("GET", "/v1/jobs", headers={"Authorization": "Bearer wrong"})
    assert status == 401 and body["title"] == "Unauthorized"
    job = await gw.submit(spec(name="mine", env={"SIM_OUTCOME": "hang"}))
    for method, path in (("GET", f"/v1/jobs/{job['id']}"), ("POST", f"/v1/jobs/{job['id']}/cancel"),
                         ("GET", f"/v1/jobs/{job['id']}/events"), ("DELETE", f"/v1/jobs/{job['id']}")):
        status, body = await gw.call(method, path, headers=BETA)
        assert status == 404 and body["status"] == 404, (method, path)
    _, page = await gw.call("GET", "/v1/jobs", headers=BETA)
    assert page["jobs"] == []
    _, page = await gw.call("GET", "/v1/jobs", headers=OPS)  # admins see everyone
    assert [j["id"] for j in page["jobs"]] == [job["id"]]
    assert (await gw.call("GET", "/healthz", headers={}))[0] == 200


async def test_each_key_keeps_its_tenant_however_often_and_in_whatever_order_it_comes(gw: GW) -> None:
    # Valid Authorization headers are remembered; none may stand in for another, and no near miss may pass.
    mine = await gw.submit(spec(name="keyed", env={"SIM_OUTCOME": "hang"}))
    for _ in range(3):
        for headers, want in ((ALPHA, 200), (BETA, 404), (OPS, 200), ({"Authorization": "Bearer  alpha-key-123 "}, 200),
                              ({"Authorization": "Bearer alpha-key-12"}, 401),
                              ({"Authorization": "bearer alpha-key-123"}, 200),  # (schemes are case-insensitive: RFC 7235)
                              ({"Authorization": "Bearer alpha-key-123x"}, 401), ({"Authorization": "Bearer "}, 401)):
            status, _ = await gw.call("GET", f"/v1/jobs/{mine['id']}", headers=headers)
            assert status == want, (headers, status)


async def test_errors_are_problems(gw: GW) -> None:
    status, body = await gw.call("POST", "/v1/jobs", data=b"{not json", headers={**ALPHA,
                                                                                 "Content-Type": "application/json"})
    assert status == 400 and body["type"].endswith("/bad-request")
    status, body = await gw.call("POST", "/v1/jobs", json=spec(name="Bad_Name", resources={"gpus": -1}))
    assert status == 422
    assert ["name"] in [e["loc"] for e in body["errors"]]
    assert ["resources", "gpus"] in [e["loc"] for e in body["errors"]]
    status, body = await gw.call("POST", "/v1/jobs", json=spec(backend="nope"))
    assert status == 422 and body["errors"][0]["loc"] == ["backend"]
    big = spec(env={"X": "y" * (1024 * 1024 + 10)})
    status, body = await gw.call("POST", "/v1/jobs", json=big)
    assert status == 413 and body["status"] == 413
    status, body = await gw.call("GET", "/v1/jobs?limit=0")
    assert status == 400 and body["errors"][0]["loc"] == ["query", "limit"]
    status, body = await gw.call("GET", "/v1/jobs/0123456789abcdef0123456789abcdef")
    assert status == 404
    status, body = await gw.call("GET", "/v1/nowhere")
    assert status == 404 and "detail" in body


async def test_suspend_on_modelarts_is_409_without_a_vendor_call(gw: GW) -> None:
    job = await gw.submit(spec("modelarts", "no-pause", env={"SIM_OUTCOME": "hang"}))
    before = sum((await gw.sim_stats("modelarts")).values())
    status, body = await gw.call("POST", f"/v1/jobs/{job['id']}/suspend")
    assert status == 409 and "cannot be paused" in body["detail"]
    # Only the sync loop may have talked to the vendor meanwhile: no actions call.
    stats = await gw.sim_stats("modelarts")
    assert not any("actions" in k for k in stats)
    assert sum(stats.values()) - before <= 3


async def test_runai_suspend_resume_cancel(gw: GW) -> None:
    job = await gw.submit(spec("runai", "pausable", env={"SIM_OUTCOME": "hang"}))
    await gw.wait_phase(job["id"], {"RUNNING"})
    status, body = await gw.call("POST", f"/v1/jobs/{job['id']}/suspend")
    assert status == 202 and body["status"]["phase"] == "SUSPENDING"
    assert (await gw.wait_phase(job["id"], {"SUSPENDED"}))["status"]["phase"] == "SUSPENDED"
    status, _ = await gw.call("POST", f"/v1/jobs/{job['id']}/suspend")
    assert status == 409
    status, _ = await gw.call("POST", f"/v1/jobs/{job['id']}/resume")
    assert status == 202
    assert (await gw.wait_phase(job["id"], {"RUNNING"}))["status"]["phase"] == "RUNNING"
    status, _ = await gw.call("POST", f"/v1/jobs/{job['id']}/cancel")
    assert status == 202
    done = await gw.wait_phase(job["id"], {"CANCELLED"})
    assert done["status"]["phase"] == "CANCELLED" and done["status"]["terminal"]
    status, body = await gw.call("POST", f"/v1/jobs/{job['id']}/cancel")
    assert status == 409 and "already CANCELLED" in body["detail"]


async def test_modelarts_cancel_is_cancelled(gw: GW) -> None:
    job = await gw.submit(spec("modelarts", "stop-ma", env={"SIM_OUTCOME": "hang"}))
    await gw.wait_phase(job["id"], {"RUNNING"})
    assert (await gw.call("POST", f"/v1/jobs/{job['id']}/cancel"))[0] == 202
    done = await gw.wait_phase(job["id"], {"CANCELLED"})
    assert done["status"]["phase"] == "CANCELLED" and done["status"]["vendor_phase"] == "Terminated"


async def test_idempotency_replay_and_conflict(gw: GW) -> None:
    key = {**ALPHA, "Idempotency-Key": "k-1"}
    first = await gw.submit(spec(name="idem"), headers=key)
    async with gw.c.post("/v1/jobs", json=spec(name="idem"), headers=key) as r:
        assert r.status == 201 and r.headers["Idempotent-Replayed"] == "true"
        again = await r.json()
    assert again["id"] == first["id"]
    status, body = await gw.call("POST", "/v1/jobs", json=spec(name="idem-other"), headers=key)
    assert status == 409 and body["job_id"] == first["id"]
    # Keys are per tenant: the same key from another tenant is a new job.
    other = await gw.submit(spec(name="idem"), headers={**BETA, "Idempotency-Key": "k-1"})
    assert other["id"] != first["id"]
    stats = await gw.sim_stats("runai")
    assert stats["POST /api/v1/workloads/trainings"] == 2


async def test_concurrent_replays_make_one_job(gw: GW) -> None:
    key = {**ALPHA, "Idempotency-Key": "race"}
    results = await asyncio.gather(*(gw.call("POST", "/v1/jobs", json=spec(name="race"), headers=key)
                                     for _ in range(8)))
    assert {s for s, _ in results} == {201}
    assert len({b["id"] for _, b in results}) == 1
    assert (await gw.sim_stats("runai"))["POST /api/v1/workloads/trainings"] == 1


async def test_dry_run_submits_nothing(gw: GW) -> None:
    status, body = await gw.call("POST", "/v1/jobs?dry_run=true", json=spec("modelarts", labels={"a": "b"}))
    assert status == 200 and body["backend"] == "modelarts"
    assert body["request"]["method"] == "POST" and body["request"]["body"]["kind"] == "job"
    assert any(e["field"] == "labels" and e["outcome"] == "dropped" for e in body["report"])
    status, body = await gw.call("POST", "/v1/jobs?dry_run=true&strict=true", json=spec("modelarts",
                                                                                         labels={"a": "b"}))
    assert status == 422 and body["errors"][0]["loc"] == ["labels"]
    _, page = await gw.call("GET", "/v1/jobs")
    assert page["jobs"] == []
    assert not any(k.startswith("POST") for k in await gw.sim_stats("modelarts"))


async def test_list_filters_and_pages(gw: GW) -> None:
    ids = []
    for i in range(5):
        j = await gw.submit(spec("runai" if i % 2 else "modelarts", f"batch-{i}", labels={"i": str(i), "g": "x"},
                                 env={"SIM_OUTCOME": "hang"}))
        ids.append(j["id"])
    await gw.submit(spec("runai", "other", env={"SIM_OUTCOME": "hang"}))
    _, page = await gw.call("GET", "/v1/jobs?name_prefix=batch-&limit=2")
    got = [j["id"] for j in page["jobs"]]
    while page["next_page_token"]:
        _, page = await gw.call("GET", f"/v1/jobs?name_prefix=batch-&limit=2&page_token={page['next_page_token']}")
        got += [j["id"] for j in page["jobs"]]
    assert got == ids[::-1]
    _, page = await gw.call("GET", "/v1/jobs?backend=runai&name_prefix=batch")
    assert {j["name"] for j in page["jobs"]} == {"batch-1", "batch-3"}
    _, page = await gw.call("GET", "/v1/jobs?label=i=3&label=g=x")
    assert [j["name"] for j in page["jobs"]] == ["batch-3"]
    _, page = await gw.call("GET", "/v1/jobs?project=1")
    assert {j["backend"] for j in page["jobs"]} == {"runai"}
    _, page = await gw.call("GET", "/v1/jobs?phase=SUCCEEDED,FAILED")
    assert page["jobs"] == []
    status, body = await gw.call("GET", "/v1/jobs?phase=BOGUS")
    assert status == 400
    status, body = await gw.call("GET", "/v1/jobs?page_token=garbage")
    assert status == 400 and body["errors"][0]["loc"] == ["query", "page_token"]


async def test_delete_marks_deleted_and_hides_from_list(gw: GW) -> None:
    job = await gw.submit(spec("modelarts", "del-me", env={"SIM_OUTCOME": "hang"}))
    status, _ = await gw.call("DELETE", f"/v1/jobs/{job['id']}")
    assert status == 204
    _, got = await gw.call("GET", f"/v1/jobs/{job['id']}")
    assert got["deleted"] is True and got["status"]["phase"] == "CANCELLED"
    _, page = await gw.call("GET", "/v1/jobs")
    assert page["jobs"] == []
    _, page = await gw.call("GET", "/v1/jobs?deleted=true")
    assert [j["id"] for j in page["jobs"]] == [job["id"]]
    status, problem = await gw.call("GET", "/v1/jobs?deleted=")  # schemathesis: an empty boolean is no boolean
    assert status == 400 and problem["errors"][0]["loc"] == ["query", "deleted"]


async def test_backends_metrics_openapi(gw: GW) -> None:
    _, backends = await gw.call("GET", "/v1/backends")
    by = {b["name"]: b for b in backends}
    assert by["modelarts"]["capabilities"]["suspend"]["supported"] is False
    assert by["runai"]["healthy"] is True and by["runai"]["kind"] == "runai"
    await gw.submit(spec())
    status, text = await gw.call("GET", "/metrics", headers={})
    assert status == 200
    assert 'tjg_http_requests_total{method="POST",route="/v1/jobs",status="201"}' in text
    assert 'tjg_vendor_calls_total{backend="runai",outcome="ok"}' in text
    assert 'tjg_jobs{backend="runai",phase=' in text
    status, doc = await gw.call("GET", "/openapi.json", headers={})
    assert status == 200 and doc["openapi"].startswith("3.1")
    from openapi_spec_validator import validate

    validate(doc)


async def test_rejected_by_the_vendor_is_kept_as_failed(gw: GW) -> None:
    status, body = await gw.call("POST", "/v1/jobs", json=spec("modelarts", "bad-flavor",
                                                               resources={"flavor": "no.such.flavor"}))
    assert status == 422 and body["vendor_code"] == "ModelArts.2781"
    _, job = await gw.call("GET", f"/v1/jobs/{body['job_id']}")
    assert job["status"]["phase"] == "FAILED" and "2781" in job["status"]["message"]


async def test_request_ids_reach_the_logs_and_request_metrics_count(tmp_path: Path) -> None:
    import io
    import json

    from gateway.core.logs import configure_logging

    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/tjg.db")
    cfg.server.access_log_sample = 1.0  # every request logged
    stream = io.StringIO()
    configure_logging("info", stream=stream, json_lines=True)
    gw = await start_gateway(cfg)

    async def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        _, text = await gw.call("GET", "/metrics", headers={})
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    try:
        before = await samples()
        async with gw.c.get("/v1/jobs/nope", headers=ALPHA) as r:
            assert r.status == 404
            given = r.headers["X-Request-Id"]
            assert (await r.json())["request_id"] == given
        async with gw.c.get("/v1/jobs", headers={**ALPHA, "X-Request-Id": "mine-123"}) as r:
            assert r.status == 200 and r.headers["X-Request-Id"] == "mine-123"
        async with gw.c.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        after = await samples()
    finally:
        await gw.c.close()
        configure_logging("info")
    lines = [json.loads(x) for x in stream.getvalue().splitlines() if '"event": "request"' in x]
    by_id = {x["request_id"]: x for x in lines}
    assert by_id[given]["status"] == 404 and by_id["mine-123"]["status"] == 200
    assert len({x["request_id"] for x in lines}) == len(lines)  # one id per request, none carried over

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("tjg_http_requests_total", method="GET", route="/v1/jobs/{id}", status="404") == 1
    assert grew("tjg_http_requests_total", method="GET", route="/v1/jobs", status="401") == 1
    assert grew("tjg_http_request_seconds_bucket", le="+Inf", method="GET", route="/v1/jobs") == 2
    assert grew("tjg_http_request_seconds_count", method="GET", route="/v1/jobs") == 2
    assert grew("tjg_http_request_seconds_bucket", le="10.0", method="GET", route="/v1/jobs") == 2
