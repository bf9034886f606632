"""`tjg serve`: configure logging, build the app, print where it listens, run it."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from gateway.api.app import create_app, server_options, simulator_port_error
from gateway.api.guard import ConnectionGuard, GuardedSite
from gateway.core.config import Config
from gateway.core.errors import StartupError
from gateway.core.logs import configure_logging
from gateway.store.ownership import claim_store

DEMO_KEY = "demo-key"


def serve(config: Config) -> None:
    """Run the gateway in the foreground until interrupted."""
    configure_logging(config.log_level)
    claim = claim_store(config.store.url)  # before the ports: a second gateway on one file says so first
    app = create_app(config)
    url = f"http://{config.server.host}:{config.server.port}"
    demo = next((t for t in config.tenants if t.name == "demo"), None)
    lines = [f"trainjob-gateway listening on {url}  (OpenAPI: {url}/openapi.json)"]
    for b in config.backends:
        lines.append(f"  backend {b.name:<12} {b.kind:<10} {b.url}{'  [simulated]' if b.simulate else ''}")
    if demo and demo.api_keys:
        key = demo.api_keys[0].get_secret_value()
        # Only the shipped demo key is shown; a key set through TJG_DEMO_KEY is a real secret.
        shown = key if key == DEMO_KEY else "<the value of TJG_DEMO_KEY>"
        lines.append(f"  demo API key: {shown}")
        lines.append(f"  try: export TJG_URL={url} TJG_API_KEY={shown}; tjg submit examples/single-gpu.yaml")
    lines.append(f"  store: {config.store.url}")
    sock = _listen(config)
    guard = ConnectionGuard(config.server.header_timeout_seconds, config.server.max_connections_per_client)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=True, shutdown_timeout=5, **server_options())
        await runner.setup()
        try:
            await GuardedSite(runner, sock, guard).start()
            # Objects alive after start-up are not scanned again by the cyclic GC, and young collections run
            # less often: a full collection over a sync cycle's rows held requests up for tens of ms.
            gc.freeze()
            gc.set_threshold(2_000, 20, 1_000)
            print("\n".join(lines), file=sys.stdout, flush=True)  # only once it listens
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    loop = asyncio.new_event_loop()
    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except (GracefulExit, KeyboardInterrupt):  # SIGTERM / SIGINT: stop as aiohttp's run_app does
        pass
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        if claim is not None:
            claim.release()


def _listen(config: Config) -> socket.socket:
    """Bind the gateway's port, and check the in-process simulators' ports, before anything starts: a
    port in use is one line naming the setting to change, not a traceback after the start-up logs."""
    host, port = config.server.host, config.server.port
    try:
        sock = socket.create_server((host, port))
    except OSError as err:
        raise StartupError(f"cannot listen on {host}:{port}: {err.strerror or err}; "
                           "change server.port (or server.host) in the config, or pass --port") from None
    for i, b in enumerate(config.backends):
        if not b.simulate:
            continue
        u = urlsplit(b.url)
        try:
            socket.create_server((u.hostname or "127.0.0.1", u.port or 80)).close()
        except OSError as err:
            sock.close()
            raise simulator_port_error(i, b, err) from None
    return sock
