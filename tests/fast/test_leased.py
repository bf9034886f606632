"""gateway.background.replicas.leased: background work that nothing but cancellation ends."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.background.replicas import leased
from gateway.store import Store
from tests.conftest import eventually


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = Store(f"sqlite+aiosqlite:///{tmp_path}/tjg.db")
    await s.migrate()
    yield s
    await s.close()


async def _run_until(task: asyncio.Task[None], done: Any) -> Any:
    async def check() -> Any:
        return done()

    try:
        return await eventually(check, within=20.0, step=0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_step_that_fails_is_said_once_and_the_work_goes_on(store: Store) -> None:
    calls: list[int] = []

    async def step() -> float:
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("the store refused a write")
        return 0.001

    with capture_logs() as logs:
        task = asyncio.create_task(leased(store, "sync:x", "me", 0.03, step))
        assert await _run_until(task, lambda: len(calls) >= 6)
    failed = [e for e in logs if e["event"] == "background_step_failed"]
    assert len(failed) == 1 and "refused a write" in failed[0]["error"] and failed[0]["lease"] == "sync:x"


async def test_a_lease_renewal_that_fails_does_not_stop_the_work(store: Store,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    acquire = store.leases.acquire
    tries: list[int] = []

    async def flaky(name: str, owner: str, ttl: float) -> bool:
        tries.append(1)
        if len(tries) == 2:  # the renewal while the step's wait runs
            raise RuntimeError("database is locked")
        return await acquire(name, owner, ttl)

    monkeypatch.setattr(store.leases, "acquire", flaky)
    steps: list[int] = []

    async def step() -> float:
        steps.append(1)
        return 0.05  # longer than ttl / 3: renewed in between

    task = asyncio.create_task(leased(store, "sync:y", "me", 0.06, step))
    assert await _run_until(task, lambda: len(steps) >= 3)
    assert len(tries) >= 3


async def test_a_background_task_that_ends_before_shutdown_is_said() -> None:
    from gateway.api.app import _say_if_died

    async def dies() -> None:
        raise RuntimeError("boom")

    async def cancelled() -> None:
        await asyncio.Event().wait()

    with capture_logs() as logs:
        died, stopped = asyncio.create_task(dies(), name="sync-x"), asyncio.create_task(cancelled(), name="quiet")
        for t in (died, stopped):
            t.add_done_callback(_say_if_died)
        await asyncio.sleep(0)
        stopped.cancel()
        await asyncio.gather(died, stopped, return_exceptions=True)
        await asyncio.sleep(0)  # (done callbacks run in the next turn)
    ended = [e for e in logs if e["event"] == "background_task_ended"]
    assert [(e["task"], e["error"]) for e in ended] == [("sync-x", "RuntimeError('boom')")]
