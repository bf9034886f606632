"""Freshness: how long after a vendor's phase change the gateway shows it, and what the sync spends.

For each vendor and fleet size, a simulator (its own process) holds `n` running jobs that the gateway's store
knows; jobs are then ended on the simulator one at a time (`POST /_sim/finish`, which answers when the change
happened) while a client watches `/v1/events` (SSE) and polls `GET /v1/jobs/{id}` of each ended job. The lag is
measured from the simulator's change to the event's arrival and to the first GET that shows SUCCEEDED; the
vendor requests are the simulator's own count over the window. Both syncs run in the same way, one after the
other: the delta sync (`sync_mode: delta`, today's default) and the whole-list sync it replaced
(`sync_mode: full`, `sync_interval` 5 s).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

from benchmarks.procs import Proc, free_port, wait_http

KEY = "fresh-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
CLUSTER = "71f69d83-ba66-4822-adf5-55ce55efd210"
PROJECT = "0123456789abcdef0123456789abcdef"


@dataclass
class Fresh:
    """One measurement."""

    vendor: str
    n: int
    mode: str
    sse_p50: float
    sse_p99: float
    get_p50: float
    get_p99: float
    req_per_s: float
    seen: int
    ended: int


_paths: dict[str, int] = {}  # the last window's vendor requests by route (to say what they were)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))]


async def _seed(db: Path, vendor: str, ids: list[str]) -> dict[str, str]:
    """Store rows for the simulator's jobs, RUNNING as a sync would have left them; vendor id -> job id."""
    from gateway.core.models import JobStatus, Phase
    from gateway.store import Store

    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.migrate()
    status = JobStatus(phase=Phase.RUNNING, vendor_phase="Running").model_dump(mode="json")
    now = time.time()
    rows = [{"id": f"{int(now * 1000):012x}{i:020x}", "tenant": "fresh", "name": f"fresh-{i}", "backend": vendor,
             "project": "1" if vendor == "runai" else "0", "vendor_name": f"fresh-{i}", "vendor_kind": "training",
             "backend_job_id": vid, "spec": {}, "report": [], "labels": {}, "phase": "RUNNING", "terminal": False,
             "status": status, "origin": "gateway", "submit_state": "submitted", "submit_error": None,
             "cancel_requested": False, "created_at": now, "updated_at": now, "deleted_at": None,
             "migrated_from": None, "migrated_to": None} for i, vid in enumerate(ids)]
    for start in range(0, len(rows), 5000):
        await store.jobs.insert_rows(rows[start:start + 5000])
    await store.close()
    return {r["backend_job_id"]: r["id"] for r in rows}


async def _measure(gw: str, sim: str, ids: dict[str, str], changes: int, gap: float,
                   settle: float) -> tuple[list[float], list[float], float, int]:
    """End `changes` jobs one every `gap` seconds; returns the SSE lags, the GET lags, vendor requests per
    second over the window, and how many ends were seen."""
    ended_at: dict[str, float] = {}
    sse_lag: dict[str, float] = {}
    get_lag: dict[str, float] = {}
    done = asyncio.Event()
    async with aiohttp.ClientSession() as s:
        async def watch() -> None:
            async with s.get(gw + "/v1/events", headers=AUTH, timeout=aiohttp.ClientTimeout(total=None)) as r:
                data = None
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                    elif not line and data is not None:
                        job, now = data.get("job_id"), time.time()
                        if data.get("to_phase") == "SUCCEEDED" and job in ended_at and job not in sse_lag:
                            sse_lag[job] = now - ended_at[job]
                            if len(sse_lag) == changes:
                                done.set()
                        data = None

        async def poll(job: str) -> None:
            while job not in get_lag:
                async with s.get(f"{gw}/v1/jobs/{job}", headers=AUTH) as r:
                    body = await r.json()
                if body.get("status", {}).get("phase") == "SUCCEEDED":
                    get_lag[job] = time.time() - ended_at[job]
                    return
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.5)  # the stream is open
        async with s.delete(sim + "/_sim/stats"):
            pass
        t0 = time.monotonic()
        victims = list(ids)[:: max(1, len(ids) // changes)][:changes]
        pollers = []
        for vid in victims:
            async with s.post(sim + "/_sim/finish", json={"ids": [vid]}) as r:
                at = (await r.json())["at"]
            ended_at[ids[vid]] = at
            pollers.append(asyncio.create_task(poll(ids[vid])))
            await asyncio.sleep(gap)
        try:
            await asyncio.wait_for(done.wait(), settle)
        except TimeoutError:
            pass
        for p in pollers:
            try:
                await asyncio.wait_for(p, max(0.1, settle / 4))
            except TimeoutError:
                p.cancel()
        async with s.get(sim + "/_sim/stats") as r:
            stats = await r.json()
            served = int(stats["total"])
            _paths.clear()
            _paths.update(stats["requests"])
        window = time.monotonic() - t0
        watcher.cancel()
    return list(sse_lag.values()), list(get_lag.values()), served / window, len(sse_lag)


def measure(tmp: Path, vendor: str, n: int, mode: str, changes: int = 30, gap: float = 0.5) -> Fresh:
    """One vendor, one fleet size, one sync mode: fresh simulator and gateway processes."""
    sim_port, gw_port = free_port(), free_port()
    procs: list[Proc] = []
    try:
        procs.append(Proc(["simulate", vendor, "--port", str(sim_port), "--speed", "50"],
                          tmp / f"fresh-sim-{vendor}-{n}-{mode}.log").start())
        sim = f"http://127.0.0.1:{sim_port}"
        asyncio.run(wait_http(sim + "/_sim/stats"))

        async def bulk() -> list[str]:
            body = {"n": n, "project": "1" if vendor == "runai" else PROJECT, "cluster": CLUSTER, "prefix": "fresh"}
            async with aiohttp.ClientSession() as s, s.post(sim + "/_sim/bulk", json=body) as r:
                return list((await r.json())["ids"])

        vids = asyncio.run(bulk())
        db = tmp / f"fresh-{vendor}-{n}-{mode}.db"
        ids = asyncio.run(_seed(db, vendor, vids))
        own = {"cluster_id": CLUSTER, "default_project": "1",
               "credentials": {"client_id": "tjg-demo", "client_secret": "tjg-demo-secret"}} if vendor == "runai" \
            else {"project_id": PROJECT, "credentials": {"ak": "TJGDEMOAK", "sk": "TJGDEMOSK"}}
        cfg = {"server": {"host": "127.0.0.1", "port": gw_port}, "store": {"url": f"sqlite+aiosqlite:///{db}"},
               "tenants": [{"name": "fresh", "api_keys": [KEY], "role": "admin"}],
               "backends": [{"name": vendor, "kind": vendor, "url": sim, "sync_mode": mode, **own}]}
        path = tmp / f"fresh-{vendor}-{n}-{mode}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        procs.append(Proc(["serve", "--config", str(path)], tmp / f"fresh-gw-{vendor}-{n}-{mode}.log").start())
        gw = f"http://127.0.0.1:{gw_port}"
        asyncio.run(wait_http(gw + "/healthz"))

        async def steady() -> None:
            """Until the sync is past its start-up (the whole-list read, and in delta mode the deltas that
            re-read the bulk creation's burst of changes): that is not what is measured."""
            async with aiohttp.ClientSession() as s:
                quiet = 0
                for _ in range(900):
                    async with s.get(gw + "/v1/backends", headers=AUTH) as r:
                        b = next(x for x in await r.json() if x["name"] == vendor)
                    sync = b.get("sync") or {}
                    last = sync.get("last_cycle") or {}
                    if sync.get("cycles", 0) >= 2 and (mode == "full" or (
                            last.get("kind") == "delta" and last.get("list_requests", 9) <= 1)):
                        quiet += 1
                        if quiet >= 3:
                            return
                    await asyncio.sleep(0.5)

        asyncio.run(steady())
        settle = 60.0 if mode == "full" else 20.0
        sse, got, rate, seen = asyncio.run(_measure(gw, sim, ids, changes, gap, settle))
        return Fresh(vendor, n, mode, _pct(sse, 50), _pct(sse, 99), _pct(got, 50), _pct(got, 99), rate, seen,
                     changes)
    finally:
        for p in reversed(procs):
            p.stop()


def run(tmp: Path, sizes: list[int], modes: tuple[str, ...] = ("delta", "full"),
        vendors: tuple[str, ...] = ("runai", "modelarts")) -> list[Fresh]:
    """Every vendor x size x mode."""
    out = []
    for vendor in vendors:
        for n in sizes:
            for mode in modes:
                out.append(measure(tmp, vendor, n, mode))
    return out


if __name__ == "__main__":
    import sys
    import tempfile

    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000]
    for f in run(Path(tempfile.mkdtemp(prefix="tjg-fresh-")), sizes):
        print(f)
