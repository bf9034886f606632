"""The HTTP service: create_app(config) builds the whole gateway and its lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp import web
from sqlalchemy.engine import make_url

from adapters.registry import load as load_vendors
from gateway.api import dashboard, tes
from gateway.api.http import CONFIG, SERVICE, SHUTDOWN, STORE, SYNCS
from gateway.api.middleware import pipeline
from gateway.api.v1 import add_routes
from gateway.api.watch import NOTIFIER, Notifier
from gateway.background.idle import IdleWatch
from gateway.background.rebalance import rebalance_step
from gateway.background.reconcile import reconcile_step
from gateway.background.recovery import recovery_step
from gateway.background.replicas import leased, replica_id
from gateway.background.sync import BackendSync
from gateway.background.webhooks import WebhookDeliverer, targets
from gateway.core.adapter import REGISTRY, Adapter
from gateway.core.config import BackendConfig, Config
from gateway.core.errors import StartupError
from gateway.core.logs import register_secrets
from gateway.service.jobs import JobService
from gateway.store import Store
from gateway.store.ownership import claim_store
from simulators.serve import start_simulator

log = structlog.get_logger(__name__)


def sim_state(config: Config, backend: str) -> str | None:
    """Where an in-process simulator keeps its jobs: beside an SQLite store's file, so a restarted
    gateway finds on the simulator the jobs its store remembers (none for PostgreSQL or :memory:)."""
    url = make_url(config.store.url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return str(Path(url.database).parent / f"sim-{backend}.state")


def simulator_port_error(index: int, backend: BackendConfig, err: OSError) -> StartupError:
    """A simulator's port cannot be bound: one line naming the setting to change."""
    u = urlsplit(backend.url)
    return StartupError(f"cannot start the {backend.name} simulator on {u.hostname}:{u.port}: "
                        f"{err.strerror or err}; change backends[{index}].url ({backend.name}) in the config")


def _simulators(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(_: web.Application) -> AsyncIterator[None]:
        runners = []
        for i, b in enumerate(config.backends):
            if not b.simulate:
                continue
            u = urlsplit(b.url)
            try:
                runners.append(await start_simulator(b.kind, u.hostname or "127.0.0.1", u.port or 80,
                                                     faults=b.simulate_faults, speed=b.simulate_speed,
                                                     state_file=sim_state(config, b.name),
                                                     gpus=b.simulator.gpus or None, quota=b.simulator.quota or None,
                                                     **b.simulator_options()))
            except OSError as err:
                for r in runners:
                    await r.cleanup()
                raise simulator_port_error(i, b, err) from None
            log.info("simulator_started", backend=b.name, kind=b.kind, url=b.url)
        yield
        for r in runners:
            await r.cleanup()
    return ctx


def _claim(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        claim = claim_store(config.store.url)  # first: a second process on the file stops before anything
        yield
        if claim is not None:
            claim.release()
    return ctx


def _core(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
        session = aiohttp.ClientSession(connector=connector)
        store = Store(config.store.url, webhook_targets=targets(config))
        await store.migrate()
        owner = replica_id()
        ttl = config.replica.lease_seconds
        adapters_: dict[str, Adapter[Any]] = {b.name: REGISTRY.create(b, session) for b in config.backends}
        service = JobService(config, store, adapters_)
        app[STORE] = store
        app[SERVICE] = service
        notifier = app[NOTIFIER] = Notifier(store, config.server.max_streams_per_tenant)
        syncs = {name: BackendSync(a, store, idle=IdleWatch(a, store, config.idle)) for name, a in adapters_.items()}
        app[SYNCS] = syncs
        await service.recover()
        service.submissions.on_submitted = {n: s.nudge for n, s in syncs.items()}
        tasks = [asyncio.create_task(leased(store, f"sync:{n}", owner, ttl, s.step, s.wake), name=f"sync-{n}")
                 for n, s in syncs.items()]
        tasks.append(asyncio.create_task(leased(store, "rebalance", owner, ttl, rebalance_step(service, config)),
                                         name="rebalance"))
        tasks.append(asyncio.create_task(leased(store, "reconcile", owner, ttl, reconcile_step(service, config)),
                                         name="reconcile"))
        tasks.append(asyncio.create_task(leased(store, "recovery", owner, ttl, recovery_step(service)),
                                         name="recovery"))
        tasks.append(asyncio.create_task(WebhookDeliverer(store, config, session, owner).run(), name="webhooks"))
        tasks.append(asyncio.create_task(notifier.run(), name="watch-notifier"))
        if store.is_sqlite:
            tasks.append(asyncio.create_task(store.db.checkpoint_loop(), name="sqlite-checkpoint"))
        for t in tasks:
            t.add_done_callback(_say_if_died)
        yield
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await service.close()
        await session.close()
        await store.close()
    return ctx


def _say_if_died(task: asyncio.Task[Any]) -> None:
    """A background task that ends before shutdown is work that silently stopped: say so."""
    if task.cancelled():
        return
    err = task.exception()
    log.error("background_task_ended", task=task.get_name(), error=repr(err) if err else None,
              exc_info=err)


# Every answer of the gateway carries these (a page of the dashboard sets a CSP of its own, kept): a
# redirect or an error page under /ui, an API error, an event stream alike.
DEFAULT_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff",
                            "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}


async def _security_headers(_: web.Request, response: web.StreamResponse) -> None:
    for name, value in DEFAULT_SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def server_options() -> dict[str, Any]:
    """aiohttp server settings the gateway runs with, wherever it is served: request bodies are not
    decompressed by the HTTP parser (a broken gzip body reset the connection); read_json refuses them."""
    return {"auto_decompress": False}


def create_app(config: Config) -> web.Application:
    """The gateway as an aiohttp application."""
    load_vendors()
    register_secrets(config.secrets())
    app = web.Application(middlewares=[pipeline(config)], client_max_size=config.server.max_body_bytes)
    app.on_response_prepare.append(_security_headers)
    app[CONFIG] = config
    app[SHUTDOWN] = asyncio.Event()

    async def end_streams(app: web.Application) -> None:
        app[SHUTDOWN].set()  # before aiohttp waits for open connections: watch streams end at once
        if NOTIFIER in app:
            app[NOTIFIER].close_all()

    app.on_shutdown.append(end_streams)
    app.cleanup_ctx.append(_claim(config))
    app.cleanup_ctx.append(_simulators(config))
    app.cleanup_ctx.append(_core(config))
    add_routes(app.router)
    tes.add_routes(app.router)
    dashboard.add_routes(app.router)
    return app
