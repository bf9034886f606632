"""Which simulator serves which vendor kind, and how to start one (in-process or in the foreground)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.modelarts import simulator as modelarts_simulator
from adapters.runai import simulator as runai_simulator


def build_simulator(vendor: str, credentials: list[tuple[str, str]] | None = None,
                    faults: dict[str, float] | None = None, seed: int | None = None,
                    speed: float = 1.0, token_ttl: int = 3600, state_file: str | None = None,
                    sample_seconds: float = 60.0) -> web.Application:
    """The aiohttp app of a vendor simulator."""
    if vendor == "runai":
        return runai_simulator.create_simulator(credentials=credentials, faults=faults, seed=seed, speed=speed,
                                                token_ttl=token_ttl, state_file=state_file)
    if vendor == "modelarts":
        return modelarts_simulator.create_simulator(credentials=credentials, faults=faults, seed=seed, speed=speed,
                                                    state_file=state_file, sample_seconds=sample_seconds)
    raise ValueError(f"no simulator for {vendor!r}")


async def start_simulator(vendor: str, host: str, port: int, **kwargs: Any) -> web.AppRunner:
    """Start a simulator on host:port inside the running loop; the caller cleans up the runner."""
    app = build_simulator(vendor, **kwargs)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def run_simulator(vendor: str, host: str, port: int, **kwargs: Any) -> None:
    """Run a simulator in the foreground until interrupted (`tjg simulate`)."""
    app = build_simulator(vendor, **kwargs)
    line = (f"{vendor} simulator on http://{host}:{port}  (faults: {kwargs.get('faults') or 'off'}; "
            "admin: /_sim/faults, /_sim/stats)")
    web.run_app(app, host=host, port=port, access_log=None, print=lambda _: print(line, flush=True))
