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
