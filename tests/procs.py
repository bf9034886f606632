"""Helpers that run `tjg serve` and `tjg simulate` as real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks.procs import Proc, free_port, wait_http
from gateway.core.adapter import REGISTRY
from tests.conftest import CLUSTER, FAST_SYNC, PROJECT, base_config

__all__ = ["Proc", "Simulators", "free_port", "listed_jobs", "start_replicas", "wait_http", "write_config"]

def write_config(path: Path, store_url: str, runai_port: int, ma_port: int, port: int,
                 backend_extra: dict[str, Any] | None = None, **extra: Any) -> Path:
    """A gateway config whose backends are external simulator processes."""
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port},
        "store": {"url": store_url},
        "log_level": "info",
        "tenants": [{"name": "alpha", "api_keys": ["alpha-key-123"], "role": "admin"}],
        "backends": [
            {"name": "runai", "kind": "runai", "url": f"http://127.0.0.1:{runai_port}", "cluster_id": CLUSTER,
             "default_project": "1", "sync_interval": 0.5,
             "credentials": {"client_id": "tjg-demo", "client_secret": "tjg-demo-secret"}},
            {"name": "modelarts", "kind": "modelarts", "url": f"http://127.0.0.1:{ma_port}", "project_id": PROJECT,
             "sync_interval": 0.5, "credentials": {"ak": "TJGDEMOAK", "sk": "TJGDEMOSK"}},
        ],
    }
    for b in cfg["backends"]:
        b.update({**FAST_SYNC, **(backend_extra or {})})
    cfg.update(extra)
    path.write_text(yaml.safe_dump(cfg))
    return path


class Simulators:
    """Both simulators as processes."""

    def __init__(self, tmp: Path, speed: float = 20.0, faults: str = "", runai_args: tuple[str, ...] = (),
                 ma_args: tuple[str, ...] = ()) -> None:
        self.runai_port, self.ma_port = free_port(), free_port()
        extra = ["--faults", faults] if faults else []
        self.procs = [
            Proc(["simulate", "runai", "--port", str(self.runai_port), "--speed", str(speed), *extra, *runai_args],
                 tmp / "sim-runai.log"),
            Proc(["simulate", "modelarts", "--port", str(self.ma_port), "--speed", str(speed), *extra, *ma_args],
                 tmp / "sim-ma.log"),
        ]

    async def start(self) -> Simulators:
        for p in self.procs:
            p.start()
        await wait_http(f"http://127.0.0.1:{self.runai_port}/_sim/stats")
        await wait_http(f"http://127.0.0.1:{self.ma_port}/_sim/stats")
        return self

    def stop(self) -> None:
        for p in self.procs:
            p.stop()

    async def set_faults(self, spec: str) -> None:
        """Switch both simulators' faults at run time (`""`: none)."""
        from simulators.kit import parse_faults

        async with aiohttp.ClientSession() as s:
            for port in (self.runai_port, self.ma_port):
                async with s.put(f"http://127.0.0.1:{port}/_sim/faults", json=parse_faults(spec)) as r:
                    assert r.status == 200, await r.text()

    async def vendor_names(self) -> dict[str, list[str]]:
        """Every job name on each vendor, through the vendor's own list API."""
        cfg = base_config(runai_url=f"http://127.0.0.1:{self.runai_port}",
                          ma_url=f"http://127.0.0.1:{self.ma_port}")
        out: dict[str, list[str]] = {}
        async with aiohttp.ClientSession() as s:
            for name in ("runai", "modelarts"):
                out[name] = await listed_names(REGISTRY.create(cfg.backend(name), s))
        return out


async def listed_jobs(adapter: Any, page_size: int = 50) -> list[Any]:
    """Every job (VendorJob) an adapter's list API shows, page by page."""
    jobs: list[Any] = []
    offset, more = 0, True
    while more:
        page, more = await adapter.list_page(offset, page_size)
        jobs += page
        offset += len(page)
        if not page:
            break
    return jobs


async def listed_names(adapter: Any) -> list[str]:
    """The vendor names of every job an adapter's list API shows, page by page."""
    return [j.handle.vendor_name for j in await listed_jobs(adapter)]


async def start_replicas(tmp: Path, db_url: str, sims: Simulators, n: int,
                         backend_extra: dict[str, Any] | None = None) -> tuple[list[Proc], list[str]]:
    """`n` gateway processes sharing one store (PostgreSQL), each answering: their processes and URLs."""
    ports = [free_port() for _ in range(n)]
    procs = []
    for i, port in enumerate(ports):
        cfg = write_config(tmp / f"gw{i}.yaml", db_url, sims.runai_port, sims.ma_port, port,
                           backend_extra=backend_extra, replica={"lease_seconds": 2.0})
        procs.append(Proc(["serve", "--config", str(cfg)], tmp / f"gw{i}.log").start())
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    for u in urls:
        await wait_http(u + "/healthz")
    return procs, urls
