"""Commands that need no running gateway: serve, translate, phases, simulate."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway.cli.specfile import read_spec_file
from gateway.core.errors import GatewayError, StartupError, ValidationError


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def problem_exit(err: GatewayError, output: str = "table") -> int:
    """An error as every command says one: one line on stderr (-o json: the problem document), exit 1."""
    from gateway.cli.output import fail

    return fail(err, output)


def cmd_translate(args: argparse.Namespace) -> int:
    """Print the dry-run JSON for a spec without a server."""
    from adapters.registry import load as load_vendors
    from gateway.core.config import load_config
    from gateway.core.ids import new_job_id
    from gateway.core.models import parse_spec
    from gateway.core.translation import enforce_strict
    from gateway.service.attempts import attempt_spec

    try:
        cfg = load_config(args.config)
        raw = read_spec_file(args.spec)
        if isinstance(raw, dict):
            raw = {**raw, "backend": args.backend}
        spec = parse_spec(raw)
        if spec.placed:
            raise ValidationError("tjg translate needs one backend (--backend NAME): `auto` and lists are placed "
                                  "by a running gateway, on the capacity it sees (tjg submit --dry-run shows where)",
                                  errors=[{"loc": ["backend"], "msg": "one backend name"}])
        backend = cfg.backend(str(spec.backend))
        first, notes = attempt_spec(spec, 1, backend.kind)  # (its first attempt, as a submit sends it)
        tr = load_vendors().translate(first, backend, new_job_id())
        tr.report += notes
        if args.strict:
            enforce_strict(tr.report)
    except GatewayError as err:
        return problem_exit(err, args.output)
    _print_json(tr.dry_run(backend.name).model_dump(mode="json"))
    return 0


def cmd_phases(args: argparse.Namespace) -> int:
    """Print a vendor's phase table."""
    from gateway.core.adapter import REGISTRY

    _print_json(REGISTRY.get(args.vendor).phase_table())
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run a vendor simulator standalone until interrupted."""
    from gateway.core.adapter import REGISTRY
    from simulators.kit import parse_amounts, parse_faults
    from simulators.serve import run_simulator, simulator_takes

    if REGISTRY.get(args.vendor).simulator is None:
        print(f"tjg simulate: backend kind {args.vendor} has no simulator", file=sys.stderr)
        return 2
    try:
        faults = parse_faults(args.faults or "")
    except ValueError as err:
        print(f"tjg simulate: --faults: {err}", file=sys.stderr)
        return 2
    try:
        gpus = parse_amounts(args.gpus or "", "--gpus")
        quota = parse_amounts(args.quota or "", "--quota")
    except ValueError as err:
        print(f"tjg simulate: {err}", file=sys.stderr)
        return 2
    if quota and not simulator_takes(args.vendor, "quota"):
        print(f"tjg simulate: --quota: the {args.vendor} simulator has no projects with quotas", file=sys.stderr)
        return 2
    creds = []
    for c in args.credentials or []:
        if ":" not in c:
            print("tjg simulate: --credentials takes ID:SECRET", file=sys.stderr)
            return 2
        ident, secret = c.split(":", 1)
        creds.append((ident, secret))
    try:
        run_simulator(args.vendor, host=args.host, port=args.port, credentials=creds, faults=faults,
                      seed=args.seed, speed=args.speed, token_ttl=args.token_ttl,
                      sample_seconds=args.sample_seconds, gpus=gpus or None, quota=quota or None)
    except ValueError as err:  # e.g. a flavor the simulator does not sell
        print(f"tjg simulate: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"tjg simulate: cannot listen on {args.host}:{args.port}: {err.strerror or err}; "
              "choose another --port", file=sys.stderr)
        return 2
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway."""
    from gateway.api.server import serve
    from gateway.core.config import load_config

    try:
        cfg = load_config(args.config)
    except GatewayError as err:
        return problem_exit(err)
    if args.port is not None:
        cfg.server.port = args.port
    if args.host is not None:
        cfg.server.host = args.host
    try:
        serve(cfg)
    except StartupError as err:
        print(f"tjg serve: {err.detail}", file=sys.stderr)
        return 2
    return 0
