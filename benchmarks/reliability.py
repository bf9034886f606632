"""python -m benchmarks.reliability [--long]: run tests/reliability and write docs/reliability.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WHAT = {
    "fault soak": "Submits through the gateway (1,000 in --long, 150 in CI) with faults on at both simulators "
                  "(http503 10 %, http429 5 %, resets 3 %, lost create responses 5 %); clients retry with an "
                  "Idempotency-Key. Every job must end in the phase its SIM_OUTCOME asks for, exist once in the "
                  "store and once on its vendor (counted through the vendor's own list API with faults off).",
    "crash": "`tjg serve` as a process, SIGKILLed in the middle of a burst of submits and again while its sync "
             "loop runs over live jobs, then restarted (three rounds in --long). Every acknowledged job must "
             "settle once, on the vendor and in the store, with an unbroken transition history.",
    "outage": "The Run:ai simulator process is frozen (SIGSTOP) for a while: reads are still served from the "
              "store, jobs are marked stale, no phase changes; after SIGCONT the marks clear. The log says "
              "sync_failed once and sync_recovered once.",
    "hostile fuzz (sqlite)": "A hypothesis fuzzer sends submits, dry runs, migrations, lists, gets, events, "
                             "logs, metrics, usage and cancels whose alphabet has NUL bytes, lone UTF-16 "
                             "surrogates, NaN/Infinity/1e999, nesting up to 6,000 levels, truncated JSON, hostile "
                             "ids and query values, and gzip/deflate/garbage/br bodies: every answer a problem "
                             "document below 500. SQLite store.",
    "hostile fuzz (postgres)": "The same fuzzer against a gateway on PostgreSQL.",
    "stateful schemathesis (sqlite)": "The stateful schemathesis run (NUL bytes allowed in its strings) on SQLite.",
    "stateful schemathesis (postgres)": "The stateful schemathesis run on PostgreSQL.",
    "renamed vendor jobs": "Submits whose extensions rename the vendor job, under lost create answers "
                           "(drop_after_commit 30 %), with plain submits alongside: the renames are refused before "
                           "anything is sent; the vendors' list APIs show no orphan, no duplicate and every plain job "
                           "once.",
    "racing migrations": "Ten concurrent migrate requests for each of five jobs: one target each, nine 409s.",
    "moves under SIGKILL": "Jobs waiting on a full Run:ai (placement.max_wait 0.5 s) move to ModelArts while "
                           "`tjg serve` is SIGKILLed and restarted (8 jobs and 3 kills; 24 and 6 in --long): one "
                           "target per job and no source left on Run:ai, counted through both simulators' list "
                           "APIs.",
    "moves with three PostgreSQL replicas": "The same with three replicas on one PostgreSQL database, one of "
                                            "them killed while the moves are under way.",
    "slow webhook receiver": "One tenant's receiver takes 5 s per delivery; another tenant's events must arrive "
                             "within 2 s.",
    "2,000 watch streams": "`tjg serve` with 2,000 open /v1/events streams from one tenant: the median of 300 "
                           "single-job GETs must stay within 3x of the median with no streams open.",
    "isolation": "A second tenant tries to get, cancel, suspend, resume, list, watch, read logs of, migrate and "
                 "delete the first tenant's job: 404 every time, nothing in its list or event stream.",
    "secrets": "A run with distinctive credentials (API keys, Run:ai client secret, ModelArts SK, webhook "
               "secret), including a backend that refuses the credentials and a failing webhook; the whole "
               "debug log and every response body are searched for each secret.",
}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reliability", description=__doc__)
    p.add_argument("--long", action="store_true", help="the long mode")
    args = p.parse_args()
    figures = Path(tempfile.mkdtemp()) / "figures.jsonl"
    env = {**os.environ, "TJG_FIGURES": str(figures)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:logging", "tests/reliability"] + (["--long"] if args.long
                                                                                           else [])
    started = time.monotonic()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    elapsed = time.monotonic() - started
    rows = [json.loads(line) for line in figures.read_text().splitlines()] if figures.exists() else []
    lines = [f"# Reliability\n\nLatest run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
             f"{'--long' if args.long else 'short (CI)'} mode, {platform.platform()}, {os.cpu_count()} cores; "
             f"pytest exit code {rc}, {elapsed:.0f} s.\n",
             "Run it: `python -m benchmarks.reliability [--long]` (CI runs the short mode as part of `pytest`).\n"]
    for name, text in WHAT.items():
        lines.append(f"## {name}\n\n{text}\n")
        for r in (r for r in rows if r["test"] == name):
            figs = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in r.items() if k not in ("test", "at"))
            lines.append(f"Latest figures: {figs}.\n")
    (ROOT / "docs" / "reliability.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return rc


if __name__ == "__main__":
    sys.exit(main())
