"""`tjg serve`: configure logging, build the app, print where it listens, run it."""

from __future__ import annotations

import sys

from aiohttp import web

from gateway.api.app import create_app
from gateway.core.config import Config
from gateway.core.logs import configure_logging

DEMO_KEY = "demo-key"


def serve(config: Config) -> None:
    """Run the gateway in the foreground until interrupted."""
    configure_logging(config.log_level)
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
    print("\n".join(lines), file=sys.stdout, flush=True)
    web.run_app(app, host=config.server.host, port=config.server.port, access_log=None, print=None,
                handle_signals=True)
