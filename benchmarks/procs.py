"""Child processes for benchmarks and end-to-end tests: `tjg` commands with their output in a file."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Proc:
    """`python -m <module> <args>` (module `gateway`, i.e. `tjg`, by default) logging to a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None,
                 module: str = "gateway") -> None:
        self.args = args
        self.log = log
        self.module = module
        self.env = {**os.environ, **(env or {})}
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = self.log.open("ab")
        self.p = subprocess.Popen([sys.executable, "-m", self.module, *self.args], cwd=ROOT, stdout=out,
                                  stderr=subprocess.STDOUT, env=self.env)
        return self

    def rss_mb(self) -> float:
        """Resident memory of the process, from /proc."""
        assert self.p is not None
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go."""
        if self.p and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


async def wait_http(url: str, within: float = 30) -> None:
    """Until `url` answers (any status)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url) as r:
                    await r.read()
                    return
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
