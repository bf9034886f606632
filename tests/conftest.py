"""Shared fixtures: config, simulators on real sockets (in-loop and in a thread for sync SDKs)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import adapters.registry  # noqa: F401  (registers the vendors before any config is parsed)
from benchmarks.procs import free_port
from gateway.api.app import server_options
from gateway.core.adapter import REGISTRY
from gateway.core.config import Config, parse_config
from simulators.serve import build_simulator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CLUSTER = "71f69d83-ba66-4822-adf5-55ce55efd210"
PROJECT = "0123456789abcdef0123456789abcdef"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run the reliability suite in its long mode (more jobs, longer outages)")


# The fast tier: no socket, no sleep (a fake adapter, the store in a temporary file, the CLI in process).
# Everything else is the end-to-end tier (marked e2e): a gateway and simulators over real sockets, or processes.
FAST_MODULES = {"test_architecture", "test_phases", "test_spec", "test_translate", "test_signer", "test_visibility",
                "test_records"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the end-to-end tier, so `pytest -m "not e2e"` runs the fast one (and `-m e2e` the rest)."""
    for item in items:
        path = Path(str(item.fspath))
        if path.parent.name != "fast" and path.stem not in FAST_MODULES:
            item.add_marker(pytest.mark.e2e)


# -- the whole run's logs hold no secret ---------------------------------------------------------------
# Every secret the tests' configs use, and a URL password of any shape: none may reach a log line, whatever
# test or process wrote it (each process appends its rendered lines to TJG_LOG_COPY; processes' own output
# files under the run's temporary folder are read too).
SECRETS = ("alpha-key-123", "beta-key-456", "ops-key-789", "tjg-demo-secret", "runai-secret-xyz", "TJGDEMOSK",
           "modelarts-sk-secret", "ModelArtsSecretKey-93QX", "hook-secret-123", "replica-hook-secret",
           "consistency-hook", "attempts-hook", "reasons-hook", "hook-pass-9876")
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:(?!\*\*\*@)[^@/\s'\"]+@")


def pytest_configure(config: pytest.Config) -> None:
    """Start the run's log copy (see SECRETS)."""
    if not hasattr(config, "workerinput"):
        fd, path = tempfile.mkstemp(prefix="tjg-run-", suffix=".log")
        os.close(fd)
        os.environ["TJG_LOG_COPY"] = path
        from gateway.core.logs import configure_logging

        configure_logging("info")


def leaked_lines(text: str) -> list[str]:
    """The lines of a log that hold a secret or a URL password."""
    return [line[:300] for line in text.splitlines()
            if any(s in line for s in SECRETS) or URL_PASSWORD.search(line)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any log line of it holds a secret."""
    copy = os.environ.get("TJG_LOG_COPY")
    files = [Path(copy)] if copy else []
    try:
        base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
        files += [p for p in base.rglob("*.log") if p.is_file()]
    except Exception:
        pass
    found = []
    for f in files:
        try:
            leaks = leaked_lines(f.read_text(errors="replace"))
        except OSError:
            continue
        found += [f"{f.name}: {line}" for line in leaks]
    if found:
        session.exitstatus = 1
        print(f"\nSECRETS IN LOGS ({len(found)} lines):\n" + "\n".join(found[:40]), file=sys.stderr)
    elif copy:
        size = Path(copy).stat().st_size if Path(copy).exists() else 0
        print(f"\nlog scan: {len(files)} log files, {size} bytes of in-run log lines, no secret", file=sys.stderr)


@pytest.fixture(scope="session")
def long_mode(request: pytest.FixtureRequest) -> bool:
    """True under --long."""
    return bool(request.config.getoption("--long"))


def record_figures(test: str, **figures: Any) -> None:
    """Append a reliability test's figures to $TJG_FIGURES (JSON lines), when set."""
    import json
    import os
    import time

    path = os.environ.get("TJG_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, "at": time.time(), **figures}) + "\n")


def base_config(runai_url: str = "http://127.0.0.1:9101", ma_url: str = "http://127.0.0.1:9102",
                **overrides: Any) -> Config:
    """A config with one Run:ai and one ModelArts backend (not simulated in-process)."""
    raw: dict[str, Any] = {
        "tenants": [{"name": "demo", "api_keys": ["demo-key"], "role": "admin"}],
        "backends": [
            {"name": "runai", "kind": "runai", "url": runai_url, "cluster_id": CLUSTER, "default_project": "1",
             "credentials": {"client_id": "tjg-demo", "client_secret": "tjg-demo-secret"}},
            {"name": "modelarts", "kind": "modelarts", "url": ma_url, "project_id": PROJECT,
             "credentials": {"ak": "TJGDEMOAK", "sk": "TJGDEMOSK"}},
        ],
    }
    raw.update(overrides)
    return parse_config(raw)


@pytest.fixture
def config() -> Config:
    return base_config()


class AppThread:
    """An aiohttp app served from its own thread and loop (for synchronous clients: SDKs, schemathesis)."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app: web.Application | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self.app = self.factory()
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, **server_options())
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> AppThread:
        self._thread.start()
        assert self._ready.wait(30), "app did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class SimThread(AppThread):
    """A simulator served from its own thread and loop, for synchronous SDK clients."""

    def __init__(self, vendor: str, **kwargs: Any) -> None:
        super().__init__(lambda: build_simulator(vendor, **kwargs))


@pytest.fixture
def runai_sim_thread() -> Iterator[SimThread]:
    with SimThread("runai", speed=10.0) as sim:
        yield sim


@pytest.fixture
def modelarts_sim_thread() -> Iterator[SimThread]:
    with SimThread("modelarts", speed=10.0) as sim:
        yield sim


class LoopSim:
    """A simulator on a real socket inside the test's own event loop."""

    def __init__(self, runner: web.AppRunner, port: int, app: web.Application) -> None:
        self.runner = runner
        self.port = port
        self.app = app
        self.url = f"http://127.0.0.1:{port}"


async def start_loop_sim(vendor: str, **kwargs: Any) -> LoopSim:
    """Start a simulator in the running loop on a free port."""
    app = build_simulator(vendor, **kwargs)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return LoopSim(runner, port, app)


@pytest.fixture
async def runai_sim() -> AsyncIterator[LoopSim]:
    sim = await start_loop_sim("runai", speed=20.0)
    yield sim
    await sim.runner.cleanup()


@pytest.fixture
async def modelarts_sim() -> AsyncIterator[LoopSim]:
    sim = await start_loop_sim("modelarts", speed=20.0)
    yield sim
    await sim.runner.cleanup()


@pytest.fixture
def mock_http(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """aioresponses, made to work with aiohttp 3.14 (aioresponses 0.7.9 does not pass the new
    `stream_writer` argument: pnuckowski/aioresponses#289)."""
    import inspect
    from unittest.mock import Mock

    import aioresponses.core
    from aiohttp import ClientResponse

    if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
        class CompatResponse(ClientResponse):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.setdefault("stream_writer", Mock(output_size=0))
                super().__init__(*args, **kwargs)

        monkeypatch.setattr(aioresponses.core, "ClientResponse", CompatResponse)
    with aioresponses.aioresponses() as m:
        yield m


# -- gateway fixtures -------------------------------------------------------------------------
def postgres_url() -> str | None:
    """TJG_TEST_POSTGRES_URL as an asyncpg URL, or None."""
    import os

    url = os.environ.get("TJG_TEST_POSTGRES_URL")
    if not url:
        return None
    return url.replace("postgresql://", "postgresql+asyncpg://", 1) if url.startswith("postgresql://") else url


def require_postgres() -> str:
    """The PostgreSQL URL; skipped with a reason without one (CI sets it and then it must work)."""
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL tests need TJG_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    return url


async def fresh_pg_database(url: str) -> tuple[str, Any]:
    """Create an empty database next to `url`; returns its URL and a drop coroutine factory."""
    import uuid as _uuid

    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    name = f"tjg_{_uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                                     database=u.database)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await admin(f'CREATE DATABASE "{name}"')

    async def drop() -> None:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return str(u.set(database=name).render_as_string(hide_password=False)), drop


# Simulators at 20x: a delta every 0.2 s (as the whole-list sync polled them when busy), and a budget that
# does not slow that down.
FAST_SYNC = {"delta_interval": 0.2, "request_budget": 50.0}


def gateway_config(store_url: str, runai_port: int | None = None, ma_port: int | None = None,
                   simulate: bool = True, speed: float = 20.0, backend_extra: dict[str, Any] | None = None,
                   tenant_extra: dict[str, dict[str, Any]] | None = None,
                   per_backend: dict[str, dict[str, Any]] | None = None, **extra: Any) -> Config:
    """A full gateway config with two tenants and both backends (simulated in-process by default)."""
    rp, mp = runai_port or free_port(), ma_port or free_port()
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "store": {"url": store_url},
        "log_level": "warning",
        "tenants": [{"name": "alpha", "api_keys": ["alpha-key-123"], "role": "user"},
                    {"name": "beta", "api_keys": ["beta-key-456"], "role": "user"},
                    {"name": "ops", "api_keys": ["ops-key-789"], "role": "admin"}],
        "backends": [
            {"name": "runai", "kind": "runai", "url": f"http://127.0.0.1:{rp}", "simulate": simulate,
             "simulate_speed": speed, "cluster_id": CLUSTER, "default_project": "1", "sync_interval": 0.5,
             **FAST_SYNC, "credentials": {"client_id": "tjg-demo", "client_secret": "runai-secret-xyz"}},
            {"name": "modelarts", "kind": "modelarts", "url": f"http://127.0.0.1:{mp}", "simulate": simulate,
             "simulate_speed": speed, "project_id": PROJECT, "sync_interval": 0.5, **FAST_SYNC,
             "credentials": {"ak": "MAAKEXAMPLE", "sk": "modelarts-sk-secret"}},
        ],
    }
    for b in raw["backends"]:  # a setting one vendor's config does not have goes to the others only
        fields = REGISTRY.get(b["kind"]).config_model.model_fields
        b.update({k: v for k, v in (backend_extra or {}).items() if k in fields})
        b.update((per_backend or {}).get(b["name"], {}))
    for t in raw["tenants"]:
        t.update((tenant_extra or {}).get(t["name"], {}))
    for k, v in extra.items():
        raw[k] = v
    return parse_config(raw)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Any]:
    """A gateway (SQLite, both backends simulated in-process) and a client for it."""
    from tests.gwkit import start_gateway

    g = await start_gateway(gateway_config(f"sqlite+aiosqlite:///{tmp_path}/tjg.db"))
    yield g
    await g.c.close()


def until(fn: Any, ok: Any = bool, within: float = 30.0, step: float = 0.05) -> Any:
    """Call `fn` until `ok` holds for what it returns or `within` seconds pass; returns the last value, for the
    caller to assert on (a wait on a condition, never a fixed sleep)."""
    import time

    deadline = time.monotonic() + within
    while True:
        value = fn()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(step)


async def eventually(check: Any, within: float = 15.0, step: float = 0.1) -> Any:
    """Call async `check` until it returns something truthy or `within` seconds pass; returns the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    value = await check()
    for _ in range(int(within / step) + 1):
        if value or loop.time() > deadline:
            break
        await asyncio.sleep(step)
        value = await check()
    return value


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    """A gateway (SQLite, simulated backends) served from its own thread, for synchronous clients."""
    from gateway.api.app import create_app

    db = Path(tmp_path_factory.mktemp("live")) / "tjg.db"
    cfg = gateway_config(f"sqlite+aiosqlite:///{db}")
    with AppThread(lambda: create_app(cfg)) as gw:
        yield gw
