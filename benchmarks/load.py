"""A load generator that runs in its own process: an aiohttp client pool hammering one URL."""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

import aiohttp


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) of a list."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


async def _run(url: str, method: str, headers: dict[str, str], body: Any, concurrency: int, duration: float,
               body_factory: str | None) -> dict[str, Any]:
    lat: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    counter = 0
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as s:
        deadline = time.perf_counter() + duration

        async def worker(w: int) -> None:
            nonlocal errors, counter
            while time.perf_counter() < deadline:
                counter += 1
                payload = body
                if body_factory == "unique-name":
                    payload = {**body, "name": f"{body['name']}-{w}-{counter}"}
                t0 = time.perf_counter()
                try:
                    async with s.request(method, url, headers=headers,
                                         data=None if payload is None else json.dumps(payload)) as r:
                        await r.read()
                        statuses[r.status] = statuses.get(r.status, 0) + 1
                        if r.status >= 400:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                    continue
                lat.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": len(lat), "rps": len(lat) / elapsed, "p50_ms": percentile(lat, 50) * 1000,
            "p99_ms": percentile(lat, 99) * 1000, "mean_ms": (statistics.fmean(lat) * 1000) if lat else 0.0,
            "errors": errors, "statuses": statuses}


def _child(q: Any, args: tuple[Any, ...]) -> None:
    q.put(asyncio.run(_run(*args)))


def load(url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None,
         concurrency: int = 16, duration: float = 5.0, body_factory: str | None = None) -> dict[str, Any]:
    """Run the load from a separate process and return its figures."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, (url, method, headers or {}, body, concurrency, duration, body_factory)))
    p.start()
    res: dict[str, Any] = q.get(timeout=duration + 120)
    p.join(30)
    return res
