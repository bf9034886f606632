"""Fuzzing (schemathesis stateful + hypothesis on JobSpec), tenant isolation, and secrets in logs."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.config import parse_config
from gateway.core.logs import configure_logging
from tests.conftest import AppThread, eventually, gateway_config, record_figures, start_loop_sim
from tests.gwkit import ALPHA, BETA, GW, spec, start_gateway
from tests.strategies import job_specs

pytestmark = pytest.mark.reliability
OPS_KEY = {"Authorization": "Bearer ops-key-789"}


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(
    job_specs("runai"), job_specs("modelarts"),
    st.dictionaries(st.sampled_from(["name", "backend", "image", "resources", "env", "inputs", "labels",
                                     "priority", "command", "bogus", "distributed", "extensions"]),
                    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                                 | st.text(max_size=8),
                                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                     max_size=3),
                                 max_leaves=8))))
def test_any_jobspec_is_422_or_accepted_never_500(live_gateway: AppThread, body: dict[str, Any]) -> None:
    async def post() -> int:
        async with aiohttp.ClientSession() as s, s.post(live_gateway.url + "/v1/jobs?dry_run=true", json=body,
                                                        headers=OPS_KEY) as r:
            payload = await r.json(content_type=None)
            if r.status >= 400:
                assert payload["status"] == r.status and payload["detail"]
            return r.status

    status = asyncio.run(post())
    assert status in (200, 400, 422), status


async def test_a_second_tenant_cannot_see_list_touch_or_watch(gw: GW) -> None:
    job = await gw.submit(spec("modelarts", "private", env={"SIM_OUTCOME": "hang"}))
    checks = 0
    for method, path, body in (("GET", f"/v1/jobs/{job['id']}", None), ("POST", f"/v1/jobs/{job['id']}/cancel", None),
                               ("POST", f"/v1/jobs/{job['id']}/suspend", None),
                               ("POST", f"/v1/jobs/{job['id']}/resume", None),
                               ("GET", f"/v1/jobs/{job['id']}/events", None),
                               ("GET", f"/v1/jobs/{job['id']}/events?watch=true", None),
                               ("GET", f"/v1/jobs/{job['id']}/logs", None),
                               ("POST", f"/v1/jobs/{job['id']}/migrate", {"backend": "runai"}),
                               ("DELETE", f"/v1/jobs/{job['id']}", None)):
        status, _ = await gw.call(method, path, headers=BETA, json=body)
        assert status == 404, (method, path, status)
        checks += 1
    for q in ("", "?name_prefix=priv", "?backend=modelarts", "?phase=QUEUED,STARTING,RUNNING"):
        _, page = await gw.call("GET", f"/v1/jobs{q}", headers=BETA)
        assert page["jobs"] == []
        checks += 1
    async with gw.c.get("/v1/events", headers=BETA) as stream:
        await gw.call("POST", f"/v1/jobs/{job['id']}/cancel")  # alpha's own change
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(stream.content.readuntil(b"event: transition"), 1.0)
    _, mine = await gw.call("GET", f"/v1/jobs/{job['id']}", headers=ALPHA)
    assert mine["id"] == job["id"]
    record_figures("isolation", cross_tenant_requests=checks + 1, leaks=0)


async def test_no_configured_secret_appears_anywhere(tmp_path: Path) -> None:
    secrets = {"api": "tenant-api-key-ZX81", "api2": "second-api-key-QL1", "runai": "runai-client-secret-77AB",
               "sk": "ModelArtsSecretKey-93QX", "hook": "webhook-hmac-secret-55ZZ"}
    wrong_sim = await start_loop_sim("runai", credentials=[("tjg-demo", "some-other-secret")])
    rx_port = wrong_sim.port  # any listener will do for a webhook that fails
    cfg_raw = {
        "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/s.db"},
        "tenants": [{"name": "alpha", "api_keys": [secrets["api"]], "role": "admin",
                     "webhooks": [{"url": f"http://127.0.0.1:{rx_port}/nowhere", "secret": secrets["hook"]}]},
                    {"name": "beta", "api_keys": [secrets["api2"]]}],
        "backends": [
            {**b.model_dump(mode="json"), "credentials": {"client_id": "tjg-demo", "client_secret": secrets["runai"]}}
            if b.kind == "runai" else {**b.model_dump(mode="json"), "credentials": {"ak": "MAAK", "sk": secrets["sk"]}}
            for b in gateway_config("sqlite://").backends]
        + [{"name": "runai-wrong", "kind": "runai", "url": wrong_sim.url, "cluster_id":
            "71f69d83-ba66-4822-adf5-55ce55efd210", "default_project": "1",
            "credentials": {"client_id": "tjg-demo", "client_secret": secrets["runai"]},
            "retry": {"attempts": 2, "base_delay": 0.01, "max_delay": 0.02}}],
    }
    for b in cfg_raw["backends"]:
        for k in ("simulate_faults",):
            b.pop(k, None)
    cfg = parse_config(cfg_raw)
    stream = io.StringIO()
    configure_logging("debug", stream=stream, json_lines=True)
    bodies: list[str] = []
    gw = await start_gateway(cfg)
    key = {"Authorization": f"Bearer {secrets['api']}"}
    try:
        for backend in ("runai", "modelarts", "runai-wrong"):
            _, body = await gw.call("POST", "/v1/jobs", headers=key,
                                    json=spec(backend, f"sec-{backend}", env={"SIM_RUN_SECONDS": "0.2"}))
            bodies.append(json.dumps(body))
        _, body = await gw.call("POST", "/v1/jobs", headers={"Authorization": "Bearer nope"}, json={})
        bodies.append(json.dumps(body))
        # Until the paths that could leak have run: a failed webhook delivery, the wrong backend's refused token,
        # and the two good jobs ended through sync cycles.
        async def ran() -> bool:
            _, page = await gw.call("GET", "/v1/jobs?phase=SUCCEEDED", headers=key)
            log = stream.getvalue()
            return ('"webhook_delivery_failed"' in log and 'token request refused' in log
                    and len(page["jobs"]) == 2)

        assert await eventually(ran, within=60)
        for path in ("/v1/jobs", "/v1/backends", "/metrics", "/openapi.json", "/healthz"):
            _, body = await gw.call("GET", path, headers=key)
            bodies.append(body if isinstance(body, str) else json.dumps(body))
        for job in json.loads(bodies[-5])["jobs"]:
            _, evs = await gw.call("GET", f"/v1/jobs/{job['id']}/events", headers=key)
            bodies.append(json.dumps(evs))
    finally:
        await gw.c.close()
        await wrong_sim.runner.cleanup()
        configure_logging("info")
    log = stream.getvalue()
    assert '"runai_token_fetched"' in log and "token request refused" in log  # the paths really ran
    haystack = log + "\n".join(bodies)
    hits = {name: haystack.count(value) for name, value in secrets.items() if value in haystack}
    assert not hits, f"secrets leaked: {hits}"
    record_figures("secrets", log_lines=log.count("\n"), responses_scanned=len(bodies),
                   secrets_checked=len(secrets), hits=0)
