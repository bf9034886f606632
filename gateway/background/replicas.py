"""Background work shared by several replicas: each named job runs where its lease is held."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

import structlog

from gateway.store import Store

log = structlog.get_logger(__name__)


def replica_id() -> str:
    """This process's identity in the leases table."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def leased(store: Store, name: str, owner: str, ttl: float, step: Callable[[], Awaitable[float]],
                 wake: asyncio.Event | None = None) -> None:
    """Run `step` repeatedly while holding lease `name`; it returns how long to wait before the next
    (cut short when `wake` is set). Another replica takes over within `ttl` after this one dies. Nothing
    but cancellation ends it: an error is logged (once in a row) and the work goes on `ttl / 3` later."""
    held = [False]  # (set as soon as the lease is taken: a step that fails after still releases it at shutdown)
    failed = False
    try:
        while True:
            try:
                await _run_held(store, name, owner, ttl, step, wake, held)
                failed = False
            except asyncio.CancelledError:
                raise
            except Exception as err:  # e.g. the store refusing a write: a dead task would stop it for good
                if not failed:
                    log.exception("background_step_failed", lease=name, error=str(err))
                    failed = True
                await asyncio.sleep(ttl / 3)
    finally:
        if held[0]:
            try:
                await asyncio.shield(store.leases.release(name, owner))
            except Exception:
                pass


async def _run_held(store: Store, name: str, owner: str, ttl: float, step: Callable[[], Awaitable[float]],
                    wake: asyncio.Event | None, held: list[bool]) -> None:
    """Take (or keep) the lease, run one step and wait for the next; `held[0]` says whether the lease is held."""
    try:
        got = await store.leases.acquire(name, owner, ttl)
    except Exception as err:
        log.warning("lease_unavailable", lease=name, error=str(err))
        got = False
    if got != held[0]:
        log.info("lease_acquired" if got else "lease_lost", lease=name, owner=owner)
        held[0] = got
    if not got:
        await asyncio.sleep(ttl / 3)
        return
    wait = await step()
    while wait > 0:  # sleep in slices, renewing the lease in between
        chunk = min(wait, ttl / 3)
        if wake is None:
            await asyncio.sleep(chunk)
        else:
            try:
                await asyncio.wait_for(wake.wait(), chunk)
                wake.clear()
                break
            except TimeoutError:
                pass
        wait -= chunk
        if wait > 0 and not await store.leases.acquire(name, owner, ttl):
            break
