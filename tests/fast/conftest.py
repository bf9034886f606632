"""The fast tier: a real SQLite store in a temporary file, the gateway's service over a fake adapter, no
sockets and no sleeps. These tests are what `pytest -m "not e2e"` runs in seconds."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.background.sync import BackendSync
from gateway.core.adapter import REGISTRY
from gateway.service.jobs import JobService
from gateway.service.principal import Principal
from gateway.store import Store
from tests.fakes import VENDORS, FakeVendor, fake_config

ALPHA = Principal("alpha")
BETA = Principal("beta")
_n = itertools.count()


class World:
    """The service, the store, the fake vendor and the backend's sync, as a test drives them."""

    def __init__(self, svc: JobService, vendor: FakeVendor, sync: BackendSync) -> None:
        self.svc, self.vendor, self.sync, self.store = svc, vendor, sync, svc.store

    async def submit(self, name: str = "train", who: Principal = ALPHA, key: str | None = None,
                     **spec: Any) -> Any:
        raw = {"name": name, "backend": "fake", "image": "python:3.11", **spec}
        return await self.svc.submit(who, raw, idempotency_key=key)

    async def row(self, job_id: str) -> dict[str, Any]:
        row = await self.store.jobs.get(job_id)
        assert row is not None
        return row

    async def history(self, job_id: str) -> list[str]:
        """The job's phases, oldest first (phase transitions only: not change events or activity marks)."""
        return [t["to_phase"] for t in await self.store.events.for_job(job_id) if t["kind"] == "transition"]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    name = f"v{next(_n)}"
    cfg = fake_config(f"sqlite+aiosqlite:///{tmp_path}/tjg.db", name)
    store = Store(cfg.store.url)
    await store.migrate()
    adapter = REGISTRY.create(cfg.backend("fake"), None)  # type: ignore[arg-type]  # a fake needs no session
    svc = JobService(cfg, store, {"fake": adapter})
    yield World(svc, VENDORS[name], BackendSync(adapter, store))
    await svc.close()
    await store.close()
