"""gateway.core.retrying.run: tenacity's retries, with nothing left for the cyclic GC."""

from __future__ import annotations

import gc
import weakref

import pytest
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from gateway.core.retrying import run


class Payload:
    """Something a call's callbacks hold (a translation, say)."""


async def test_run_retries_and_frees_what_the_callbacks_held_without_the_gc() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionError("once")
        return "ok"

    def retrying_holding(payload: Payload) -> AsyncRetrying:
        def give_up(state: RetryCallState) -> str:
            raise RuntimeError(f"gave up with {payload}")

        return AsyncRetrying(retry=retry_if_exception(lambda e: isinstance(e, ConnectionError)),
                             stop=stop_after_attempt(3), retry_error_callback=give_up)

    payload = Payload()
    held = weakref.ref(payload)
    gc.disable()
    try:
        retrying = retrying_holding(payload)
        del payload
        assert await run(retrying, flaky) == "ok"
        del retrying
        assert held() is None  # freed by reference counting alone
    finally:
        gc.enable()
    assert len(calls) == 2


async def test_run_gives_up_as_tenacity_does() -> None:
    async def down() -> None:
        raise ConnectionError("down")

    def give_up(state: RetryCallState) -> None:
        raise RuntimeError(f"gave up after {state.attempt_number}")

    with pytest.raises(RuntimeError, match="gave up after 3"):
        await run(AsyncRetrying(retry=retry_if_exception(lambda e: isinstance(e, ConnectionError)),
                                stop=stop_after_attempt(3), retry_error_callback=give_up), down)
