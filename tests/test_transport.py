"""Transport edge cases with aioresponses: retries, Retry-After, budget, breaker, ambiguous creates."""

from __future__ import annotations

import gc
import re
import time
from typing import Any

import aiohttp
import pytest

from adapters.http import Transport
from adapters.runai.client import parse_error
from gateway.core.config import BackendConfig
from gateway.core.errors import (
    AmbiguousCreate,
    BackendConflict,
    BackendNotFound,
    BackendRejected,
    BackendUnavailable,
)
from tests.conftest import eventually

URL = "http://runai.test"


class NoAuth:
    async def headers(self, method: str, path: str, query: Any, body: bytes, base: dict[str, str]) -> dict[str, str]:
        return base

    async def unauthorized(self, sent: dict[str, str]) -> bool:
        return False


def transport(session: aiohttp.ClientSession, **kw: Any) -> Transport:
    cfg = BackendConfig.model_validate({"name": "r", "kind": "runai", "url": URL,
                                        "retry": {"attempts": kw.pop("attempts", 4), "base_delay": 0.001,
                                                  "max_delay": 0.002}, **kw})
    return Transport(cfg, session, NoAuth(), parse_error("r"))


PATH = re.compile(r"^http://runai\.test/api/v1/workloads.*$")


async def test_idempotent_get_retries_5xx_then_succeeds(mock_http: Any) -> None:
    async with aiohttp.ClientSession() as s:
        t = transport(s)
        m = mock_http
        m.get(PATH, status=503, payload={"code": 503, "message": "busy"})
        m.get(PATH, exception=aiohttp.ServerDisconnectedError())
        m.get(PATH, status=200, payload={"workloads": []})
        r = await t.request("GET", "/api/v1/workloads")
        assert r.status == 200


async def test_retry_after_is_honoured(mock_http: Any) -> None:
    async with aiohttp.ClientSession() as s:
        t = transport(s)
        m = mock_http
        m.get(PATH, status=429, headers={"Retry-After": "0.3"}, payload={"code": 429, "message": "slow"})
        m.get(PATH, status=200, payload={})
        started = time.monotonic()
        await t.request("GET", "/api/v1/workloads")
        assert time.monotonic() - started >= 0.3


async def test_gives_up_after_the_attempts(mock_http: Any) -> None:
    async with aiohttp.ClientSession() as s:
        t = transport(s, attempts=3)
        m = mock_http
        for _ in range(3):
            m.get(PATH, status=500, payload={"code": 500, "message": "boom"})
        with pytest.raises(BackendUnavailable, match="gave up after 3"):
            await t.request("GET", "/api/v1/workloads")


async def test_a_create_is_not_retried_after_a_5xx_or_reset(mock_http: Any) -> None:
    async with aiohttp.ClientSession() as s:
        t = transport(s)
        m = mock_http
        m.post(PATH, status=503, payload={"code": 503, "message": "busy"})
        with pytest.raises(AmbiguousCreate):
            await t.request("POST", "/api/v1/workloads/trainings", body={}, idempotent=False)
        m.post(PATH, exception=aiohttp.ServerDisconnectedError())
        with pytest.raises(AmbiguousCreate):
            await t.request("POST", "/api/v1/workloads/trainings", body={}, idempotent=False)


async def test_a_create_is_retried_after_a_429_which_was_not_applied(mock_http: Any) -> None:
    async with aiohttp.ClientSession() as s:
        t = transport(s)
        m = mock_http
        m.post(PATH, status=429, payload={"code": 429, "message": "slow"})
        m.post(PATH, status=202, payload={"workloadId": "w"})
        r = await t.request("POST", "/api/v1/workloads/trainings", body={}, idempotent=False)
        assert r.status == 202


async def test_client_errors_are_not_retried_and_keep_the_vendor_message(mock_http: Any) -> None:
    async with aiohttp.ClientSession() as s:
        t = transport(s)
        m = mock_http
        m.post(PATH, status=400, payload={"code": 400, "message": "Bad submission request",
                                          "complianceIssues": [{"field": "spec.image", "details": "required"}]})
        with pytest.raises(BackendRejected) as err:
            await t.request("POST", "/api/v1/workloads/trainings", body={})
        assert "spec.image: required" in err.value.detail and err.value.vendor_code == "400"
        m.get(PATH, status=404, payload={"code": 404, "message": "nope"})
        with pytest.raises(BackendNotFound):
            await t.request("GET", "/api/v1/workloads/x")
        # A taken name: a conflict (the create went through earlier), in either 400 shape Run:ai documents.
        for taken in ({"code": 400, "message": "Bad submission request",
                       "complianceIssues": [{"field": "name", "details": "already exists"}]},
                      {"code": 400, "message": "Bad request", "details": "name: workload 'x' already exists in project 1"}):
            m.post(PATH, status=400, payload=taken)
            with pytest.raises(BackendConflict):
                await t.request("POST", "/api/v1/workloads/trainings", body={})


async def test_retry_budget_limits_retry_storms(mock_http: Any) -> None:
    async with aiohttp.ClientSession() as s:
        t = transport(s, attempts=10, retry={"attempts": 10, "base_delay": 0.0, "max_delay": 0.0,
                                             "budget_ratio": 0.0})
        t.budget.tokens = 2
        m = mock_http
        for _ in range(10):
            m.get(PATH, status=500, payload={"code": 500, "message": "x"})
        with pytest.raises(BackendUnavailable, match="after 3 attempts"):
            await t.request("GET", "/api/v1/workloads")


async def test_breaker_opens_fails_fast_and_probes_half_open(mock_http: Any) -> None:
    async with aiohttp.ClientSession() as s:
        t = transport(s, attempts=1, breaker_threshold=3, breaker_reset_seconds=0.2)
        m = mock_http
        for _ in range(3):
            m.get(PATH, status=503, payload={"code": 503, "message": "down"})
            with pytest.raises(BackendUnavailable):
                await t.request("GET", "/api/v1/workloads")
        assert t.breaker.state == "open"
        with pytest.raises(BackendUnavailable, match="circuit open"):
            await t.request("GET", "/api/v1/workloads")  # no HTTP call is made
        async def half_open() -> bool:  # the breaker's own 0.2 s reset has passed
            return bool(t.breaker.state == "half_open")

        assert await eventually(half_open, within=10, step=0.02)
        m.get(PATH, status=200, payload={})
        await t.request("GET", "/api/v1/workloads")
        assert t.breaker.state == "closed"


async def test_a_vendor_call_leaves_nothing_for_the_cyclic_gc(mock_http: Any) -> None:
    # Each call's retry state was a reference cycle: ~80 objects a submit waited for the cyclic GC, whose young
    # collections then held the event loop for 10-40 ms in a storm of submits.
    async with aiohttp.ClientSession() as s:
        t = transport(s)
        mock_http.get(PATH, status=503, payload={"code": 503, "message": "busy"})
        mock_http.get(PATH, status=200, payload={"workloads": []}, repeat=True)
        await t.request("GET", "/api/v1/workloads")  # (first-call caches made)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(5):
                assert (await t.request("GET", "/api/v1/workloads")).status == 200
            gc.collect()
            left = [type(o).__module__ for o in gc.garbage if type(o).__module__.startswith(("tenacity", "adapters"))]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert left == []
