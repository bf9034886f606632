"""Regression tests for the API holes an outside attack found (issue 29): hostile but legal-looking input that
answered 500 now answers 400/422 naming the field; a TES retry with another body is a 409; the entry script of
a multi-executor TES task quotes every env name; no secret reaches a log line."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import gateway_config
from tests.gwkit import ALPHA, GW, start_gateway


@pytest.fixture
async def gw(tmp_path: Path) -> Any:
    g = await start_gateway(gateway_config(f"sqlite+aiosqlite:///{tmp_path}/h.db"))
    yield g
    await g.c.close()


def token(after: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


@pytest.mark.parametrize("page_token", [
    token("a\x00b"),                         # a NUL inside the decoded token (PostgreSQL refuses it in text)
    token("x" * 5000),                       # longer than any id
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),  # not UTF-8 JSON
    token({"nested": 1}),
])
async def test_a_forged_page_token_is_a_400_naming_it(gw: GW, page_token: str) -> None:
    for path in ("/v1/jobs", "/ga4gh/tes/v1/tasks"):
        status, body = await gw.call("GET", f"{path}?page_token={page_token}")
        assert status == 400, (path, status, body)
        assert body["errors"][0]["loc"] == ["query", "page_token"], body


async def test_an_idempotency_key_with_a_byte_that_is_not_utf8_is_a_400(gw: GW) -> None:
    url = str(gw.c.make_url("/v1/jobs"))
    spec = {"name": "k", "backend": "runai", "image": "x", "env": {"SIM_RUN_SECONDS": "1"}}
    async with aiohttp.ClientSession() as s:
        # aiohttp sends header values as latin-1: the byte 0xff arrives as it is.
        async with s.post(url, json=spec, headers={**ALPHA, "Idempotency-Key": "key-\xff"}) as r:
            body = await r.json()
            assert r.status == 400, body
            assert body["errors"][0]["loc"] == ["header", "Idempotency-Key"], body


async def test_a_tes_ram_too_large_for_a_float_is_a_400_naming_it(gw: GW) -> None:
    for ram in ("1" + "0" * 400, "1e308", "123456789012345678901234567890", "1.5e300"):
        raw = '{"executors": [{"image": "x", "command": ["true"]}], "resources": {"ram_gb": ' + ram + "}}"
        status, body = await gw.call("POST", "/ga4gh/tes/v1/tasks", data=raw,
                                     headers={**ALPHA, "Content-Type": "application/json"})
        assert status == 400, body
        assert "ram_gb" in json.dumps(body["errors"]), body


@pytest.mark.parametrize("until", ["9999-12-31T23:59:59-23:59", "10000-01-01T00:00:00Z"])
async def test_a_usage_window_outside_the_calendar_is_a_400_naming_it(gw: GW, until: str) -> None:
    status, body = await gw.call("GET", "/v1/usage", params={"until": until})
    assert status == 400, body
    assert body["errors"][0]["loc"] == ["query", "until"], body


async def test_the_same_tes_key_with_another_body_is_a_409(gw: GW) -> None:
    task = {"name": "a", "executors": [{"image": "x", "command": ["true"]}]}
    h = {**ALPHA, "Idempotency-Key": "tes-key-1"}
    status, first = await gw.call("POST", "/ga4gh/tes/v1/tasks", json=task, headers=h)
    assert status == 200, first
    status, again = await gw.call("POST", "/ga4gh/tes/v1/tasks", json=task, headers=h)
    assert (status, again) == (200, first)  # the same body: replayed
    for change in ({"name": "b"}, {"description": "another"}, {"tags": {"run": "2"}}, {"name": "A"}):
        status, other = await gw.call("POST", "/ga4gh/tes/v1/tasks", json={**task, **change}, headers=h)
        assert status == 409, (change, other)  # (the spec a TES task becomes can be the same for two bodies)


@pytest.mark.parametrize("name", ["A;touch /tmp/tjg-pwned #", "A B", "A\n", "1A", "A=B"])
async def test_a_tes_executor_env_name_that_is_no_name_is_a_400(gw: GW, name: str) -> None:
    task = {"executors": [{"image": "x", "command": ["true"]},
                          {"image": "x", "command": ["true"], "env": {name: "v"}}]}
    status, body = await gw.call("POST", "/ga4gh/tes/v1/tasks", json=task)
    assert status == 400, body
    assert body["errors"][0]["loc"][:4] == ["body", "executors", 1, "env"], body


def test_the_entry_script_passes_each_env_assignment_as_one_argument() -> None:
    import shlex

    from gateway.api.tes import _script

    script = _script([{"command": ["echo", "$A"], "env": {"A": "x y; rm -rf /", "B.c-d": "'q'"}},
                      {"command": ["true"]}], [], [])
    step = next(line for line in script.splitlines() if "executor 0" in line)
    argv = shlex.split(step.split("( ", 1)[1].rsplit(" )", 1)[0])
    assert argv == ["env", "A=x y; rm -rf /", "B.c-d='q'", "echo", "$A"], argv


async def test_limits_are_refused_naming_the_field(gw: GW) -> None:
    base = {"name": "big", "backend": "runai", "image": "x"}
    for extra, loc in (({"labels": {f"k{i}": "v" for i in range(40_000)}}, "labels"),
                       ({"env": {f"E{i}": "v" for i in range(300)}}, "env"),
                       ({"args": ["x" * 1000] * 300}, None)):
        status, body = await gw.call("POST", "/v1/jobs", json={**base, **extra})
        assert status == 422, body
        assert loc is None or body["errors"][0]["loc"][0] == loc, body
    task = {"executors": [{"image": "x", "command": ["true"]}] * 33}
    status, body = await gw.call("POST", "/ga4gh/tes/v1/tasks", json=task)
    assert status == 400 and body["errors"][0]["loc"][:2] == ["body", "executors"], body


async def test_a_list_page_stops_at_its_byte_budget_and_the_next_page_goes_on(tmp_path: Path) -> None:
    cfg = gateway_config(f"sqlite+aiosqlite:///{tmp_path}/b.db", server={"host": "127.0.0.1", "port": 0,
                                                                       "max_page_bytes": 250_000})
    g = await start_gateway(cfg)
    try:
        made = []
        for i in range(6):  # each ~100 KB of spec: two fit in a page
            job = await g.submit({"name": f"fat-{i}", "backend": "modelarts", "image": "x",
                                  "args": ["y" * 1000] * 100, "env": {"SIM_RUN_SECONDS": "1"}})
            made.append(job["id"])
        seen: list[str] = []
        token, pages = None, 0
        while True:
            _, page = await g.call("GET", "/v1/jobs?limit=500" + (f"&page_token={token}" if token else ""))
            assert 1 <= len(page["jobs"]) <= 2, len(page["jobs"])
            seen += [j["id"] for j in page["jobs"]]
            pages += 1
            token = page["next_page_token"]
            if not token:
                break
        assert seen == made[::-1] and pages == 3
        _, tes = await g.call("GET", "/ga4gh/tes/v1/tasks?page_size=2048&view=FULL")
        assert len(tes["tasks"]) <= 2 and tes.get("next_page_token")
    finally:
        await g.c.close()


async def test_tes_clients_may_send_the_api_key_as_a_basic_password(gw: GW) -> None:
    """Issue 30: py-tes and GA4GH's runner put credentials in the URL (HTTP Basic): any user name, the key as
    the password. Bearer works as before; a wrong or malformed Basic is a 401."""
    import base64 as b64

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + b64.b64encode(f"{user}:{password}".encode()).decode()}

    status, _ = await gw.call("GET", "/ga4gh/tes/v1/tasks", headers=basic("anyone", "alpha-key-123"))
    assert status == 200
    status, _ = await gw.call("GET", "/v1/jobs", headers=basic("", "alpha-key-123"))
    assert status == 200
    for bad in (basic("alpha-key-123", ""), basic("x", "wrong-key"), {"Authorization": "Basic !!!"},
                {"Authorization": "Basic " + b64.b64encode(b"no-colon").decode()}):
        status, body = await gw.call("GET", "/ga4gh/tes/v1/tasks", headers=bad)
        assert status == 401, (bad, body)
    async with aiohttp.ClientSession() as s:  # credentials in the URL, as the clients do
        url = gw.c.make_url("/ga4gh/tes/v1/tasks").with_user("tes").with_password("alpha-key-123")
        async with s.get(url) as r:
            assert r.status == 200
