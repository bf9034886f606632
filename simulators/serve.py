"""Start a vendor's simulator by backend kind: the kind's registered adapter names its fake ("module:function"),
so this module knows no vendor and the adapters never import a simulator."""

from __future__ import annotations

import inspect
from importlib import import_module
from typing import Any

from aiohttp import web

from gateway.core.adapter import REGISTRY


def simulator_factory(kind: str) -> Any:
    """The function that makes the simulator app of a registered backend kind."""
    target = REGISTRY.get(kind).simulator
    if target is None:
        raise ValueError(f"backend kind {kind!r} has no simulator")
    module, _, func = target.partition(":")
    return getattr(import_module(module), func)


def simulator_takes(kind: str, option: str) -> bool:
    """Whether a kind's simulator has a setting named `option` (e.g. Run:ai's project quotas)."""
    return option in inspect.signature(simulator_factory(kind)).parameters


def build_simulator(kind: str, **options: Any) -> web.Application:
    """The aiohttp app of a kind's simulator; options it does not take (another vendor's) are left out."""
    factory = simulator_factory(kind)
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    app: web.Application = factory(**options)
    return app


async def start_simulator(kind: str, host: str, port: int, **options: Any) -> web.AppRunner:
    """Start a simulator on host:port inside the running loop; the caller cleans up the runner."""
    app = build_simulator(kind, **options)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def run_simulator(kind: str, host: str, port: int, **options: Any) -> None:
    """Run a simulator in the foreground until interrupted (`tjg simulate`)."""
    app = build_simulator(kind, **options)
    gpus = ", ".join(f"{k}={v:g}" for k, v in (options.get("gpus") or {}).items()) or "unlimited"
    quota = ", ".join(f"{k}={v:g}" for k, v in (options.get("quota") or {}).items())
    line = (f"{kind} simulator on http://{host}:{port}  (GPUs: {gpus}{f'; quota: {quota}' if quota else ''}; "
            f"faults: {options.get('faults') or 'off'}; admin: /_sim/faults, /_sim/stats, /_sim/preempt)")
    web.run_app(app, host=host, port=port, access_log=None, print=lambda _: print(line, flush=True))
