"""The `tjg` command line: serve, translate, phases, simulate, and client commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.core.errors import GatewayError, ValidationError

EPILOG = """\
examples:
  tjg serve                                   # default config: simulated Run:ai + ModelArts, SQLite
  tjg translate --backend modelarts examples/single-gpu.yaml
  tjg phases runai
  tjg simulate runai --port 9101 --faults http503=0.2,reset=0.05 --seed 7
  tjg submit examples/single-gpu.yaml         # against a running gateway (TJG_URL, TJG_API_KEY)
  tjg list --phase RUNNING,QUEUED
  tjg migrate ID --to modelarts --source-action cancel --dry-run
  tjg logs ID --tail 50
"""


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _problem_exit(err: GatewayError, code: int = 1) -> int:
    print(json.dumps(err.problem(), indent=2, default=str), file=sys.stderr)
    return code


def read_spec_file(path: str) -> Any:
    """Read a YAML or JSON spec file ('-' is stdin)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as err:
        raise ValidationError(f"cannot read {path}: {err.strerror}") from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValidationError(f"{path} is not valid YAML or JSON: {err}") from err


def cmd_translate(args: argparse.Namespace) -> int:
    """Print the dry-run JSON for a spec without a server."""
    from adapters import translate_spec
    from gateway.core.config import load_config
    from gateway.core.ids import new_job_id
    from gateway.core.models import parse_spec
    from gateway.core.translation import enforce_strict

    try:
        cfg = load_config(args.config)
        raw = read_spec_file(args.spec)
        if isinstance(raw, dict):
            raw = {**raw, "backend": args.backend}
        spec = parse_spec(raw)
        backend = cfg.backend(spec.backend)
        tr = translate_spec(spec, backend, new_job_id())
        if args.strict:
            enforce_strict(tr.report)
    except GatewayError as err:
        return _problem_exit(err)
    _print_json(tr.dry_run(backend.name).model_dump(mode="json"))
    return 0


def cmd_phases(args: argparse.Namespace) -> int:
    """Print a vendor's phase table."""
    from mappings import phase_table

    _print_json(phase_table(args.vendor).as_json())
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run a vendor simulator standalone until interrupted."""
    from adapters.simkit import parse_faults, run_simulator

    try:
        faults = parse_faults(args.faults or "")
    except ValueError as err:
        print(f"tjg simulate: --faults: {err}", file=sys.stderr)
        return 2
    creds = []
    for c in args.credentials or []:
        if ":" not in c:
            print("tjg simulate: --credentials takes ID:SECRET", file=sys.stderr)
            return 2
        ident, secret = c.split(":", 1)
        creds.append((ident, secret))
    run_simulator(args.vendor, host=args.host, port=args.port, credentials=creds, faults=faults,
                  seed=args.seed, speed=args.speed, token_ttl=args.token_ttl)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway."""
    from gateway.api.server import serve
    from gateway.core.config import load_config

    try:
        cfg = load_config(args.config)
    except GatewayError as err:
        return _problem_exit(err)
    if args.port is not None:
        cfg.server.port = args.port
    if args.host is not None:
        cfg.server.host = args.host
    serve(cfg)
    return 0


def _client(args: argparse.Namespace) -> Any:
    from gateway.client import GatewayClient

    url = args.url or os.environ.get("TJG_URL") or "http://127.0.0.1:8080"
    key = args.api_key or os.environ.get("TJG_API_KEY") or os.environ.get("TJG_DEMO_KEY") or "demo-key"
    return GatewayClient(url, key)


def cmd_client(args: argparse.Namespace) -> int:
    """Client commands against a running gateway."""
    from gateway.cli import client_cmds as client_cli

    try:
        rc: int = client_cli.run(args, _client(args))
        return rc
    except GatewayError as err:
        return _problem_exit(err)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of `tjg`."""
    p = argparse.ArgumentParser(
        prog="tjg", description="trainjob-gateway: one API for training jobs on Run:ai and ModelArts.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("serve", help="run the gateway", description=(
        "Run the HTTP gateway. Reads --config, else $TJG_CONFIG, else ./config/gateway.yaml. "
        "Backends with `simulate: true` get their simulator started in-process."))
    s.add_argument("--config", help="config YAML (default: $TJG_CONFIG or config/gateway.yaml)")
    s.add_argument("--host", help="override server.host")
    s.add_argument("--port", type=int, help="override server.port")
    s.set_defaults(func=cmd_serve)

    t = sub.add_parser("translate", help="print the vendor request a spec becomes (no server needed)",
                       description="Translate SPEC for --backend and print {backend, request, report}. "
                                   "Exit 1 with a problem document when the spec is invalid.")
    t.add_argument("--backend", required=True, help="backend name from the config")
    t.add_argument("--config", help="config YAML (default: $TJG_CONFIG or config/gateway.yaml)")
    t.add_argument("--strict", action="store_true", help="refuse any field the backend would drop")
    t.add_argument("spec", metavar="SPEC.yaml", help="job spec, YAML or JSON ('-' for stdin)")
    t.set_defaults(func=cmd_translate)

    ph = sub.add_parser("phases", help="print a vendor's phase table as JSON")
    ph.add_argument("vendor", choices=["runai", "modelarts"])
    ph.set_defaults(func=cmd_phases)

    sim = sub.add_parser("simulate", help="run a vendor simulator standalone", description=(
        "Run the Run:ai or ModelArts simulator. Without --credentials it accepts "
        "tjg-demo:tjg-demo-secret (Run:ai) or TJGDEMOAK:TJGDEMOSK (ModelArts)."))
    sim.add_argument("vendor", choices=["runai", "modelarts"])
    sim.add_argument("--port", type=int, required=True)
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--credentials", action="append", metavar="ID:SECRET",
                     help="accepted client id/secret or AK/SK pair (repeatable)")
    sim.add_argument("--faults", metavar="SPEC",
                     help="e.g. http503=0.2,http429=0.1,reset=0.05,delay_ms=20,drop_after_commit=0.05")
    sim.add_argument("--seed", type=int, default=None, help="seed for reproducible faults")
    sim.add_argument("--speed", type=float, default=1.0, help="lifecycle clock speed factor")
    sim.add_argument("--token-ttl", type=int, default=3600, help="Run:ai token lifetime in seconds")
    sim.set_defaults(func=cmd_simulate)

    def client_parser(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_ + ". Talks to --url (or $TJG_URL, default "
                           "http://127.0.0.1:8080) with --api-key (or $TJG_API_KEY).")
        c.add_argument("--url", help="gateway URL")
        c.add_argument("--api-key", help="API key")
        c.add_argument("--json", action="store_true", help="print JSON instead of a table")
        c.set_defaults(func=cmd_client, client_command=name)
        return c

    c = client_parser("submit", "submit a job spec")
    c.add_argument("spec", metavar="SPEC.yaml")
    c.add_argument("--backend", help="override the spec's backend")
    c.add_argument("--dry-run", action="store_true", help="show the vendor request, submit nothing")
    c.add_argument("--strict", action="store_true", help="refuse fields the backend would drop")
    c.add_argument("--idempotency-key", help="replay-safe key (default: none)")
    c = client_parser("list", "list jobs across backends")
    c.add_argument("--backend")
    c.add_argument("--phase", help="comma list, e.g. RUNNING,QUEUED")
    c.add_argument("--project")
    c.add_argument("--label", action="append", metavar="K=V")
    c.add_argument("--name-prefix")
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--all", action="store_true", help="follow page tokens to the end")
    c.add_argument("--watch", action="store_true", help="then follow every transition of your jobs")
    c = client_parser("get", "show one job")
    c.add_argument("id", metavar="ID")
    c.add_argument("--watch", action="store_true", help="follow its transitions until it ends")
    c = client_parser("migrate", "move a job to another backend")
    c.add_argument("id", metavar="ID")
    c.add_argument("--to", required=True, metavar="BACKEND", help="target backend")
    c.add_argument("--source-action", choices=["keep", "suspend", "cancel"], default="keep",
                   help="what happens to the source job once the target accepted (default keep)")
    c.add_argument("--strict", action="store_true", help="refuse if the target would drop a field")
    c.add_argument("--override", metavar="JSON", help='partial spec merged in, e.g. \'{"env": {"K": "v"}}\'')
    c.add_argument("--dry-run", action="store_true", help="show the target request and a side-by-side report")
    c = client_parser("logs", "print a preview of a job's log")
    c.add_argument("id", metavar="ID")
    c.add_argument("--task", help="task, e.g. worker-0 (default: the first)")
    c.add_argument("--tail", type=int, help="only the last N lines")
    for name, help_ in (("cancel", "cancel a job (the record is kept)"),
                        ("suspend", "suspend a job"), ("resume", "resume a suspended job"),
                        ("events", "show a job's phase transitions"), ("delete", "delete a job")):
        c = client_parser(name, help_)
        c.add_argument("id", metavar="ID")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `tjg` and `python -m gateway`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
