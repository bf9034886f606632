"""HTTP load from `wrk` (a C load generator, Debian package `wrk`): it does not run out of breath before
the Python servers it measures, as a Python load generator does."""

from __future__ import annotations

import re
import shutil
import subprocess

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def available() -> bool:
    """Whether wrk is installed (`apt-get install wrk`)."""
    return shutil.which("wrk") is not None


def _ms(text: str) -> float:
    m = re.match(r"([0-9.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def run(url: str, *, seconds: float, connections: int = 32, threads: int = 1,
        headers: dict[str, str] | None = None, cpus: set[int] | None = None) -> dict[str, float]:
    """wrk -t THREADS -c CONNECTIONS -d SECONDS --latency (on `cpus` when given): requests/s, p50/p90/p99
    latency (ms), errors."""
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--latency"]
    if cpus is not None:
        cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *cmd]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    errors = 0
    for m in re.finditer(r"Non-2xx or 3xx responses:\s+(\d+)|Socket errors: connect (\d+), read (\d+), write (\d+), "
                         r"timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups() if g)
    return {"rps": rps, "p50_ms": lat.get("50", float("nan")), "p90_ms": lat.get("90", float("nan")),
            "p99_ms": lat.get("99", float("nan")), "errors": errors}
