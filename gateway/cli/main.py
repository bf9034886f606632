"""`tjg`: the argument parser and the dispatch to server commands and client commands."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from gateway import DEFAULT_TIMEOUT, __version__
from gateway.cli.output import FORMATS, UsageError, fail
from gateway.core.errors import GatewayError, ValidationError

if TYPE_CHECKING:
    from gateway.wire import GatewayClient

# The commands' modules (and aiohttp, the vendors, the store) load when a command runs: `tjg --version`,
# `--help` and a usage error cost only this file's imports.

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
  tjg logs -f ID
  tjg wait ID && echo done                    # exit 0 SUCCEEDED, 4 FAILED/CANCELLED

exit codes: 0 ok, 1 the gateway answered with an error, 2 usage or a local file problem,
            3 cannot reach the gateway (or it went away), 4 the job ended FAILED or CANCELLED
"""


DEMO_KEY = "demo-key"
FILE = {"bash": "_shtab_compgen_files", "zsh": "_files"}  # shtab.FILE, without importing shtab for every command


def _server(name: str) -> Any:
    """A server command of gateway.cli.server_cmds, imported when it runs."""
    def run(args: argparse.Namespace) -> int:
        from gateway.cli import server_cmds

        result: int = getattr(server_cmds, name)(args)
        return result
    return run


def _client(args: argparse.Namespace) -> GatewayClient:
    url = args.url or os.environ.get("TJG_URL") or "http://127.0.0.1:8080"
    key = args.api_key or os.environ.get("TJG_API_KEY") or os.environ.get("TJG_DEMO_KEY")
    if not key:
        print(f"tjg: no API key given (--api-key or TJG_API_KEY): using the demo config's key {DEMO_KEY!r}",
              file=sys.stderr)
        key = DEMO_KEY
    from gateway.wire import GatewayClient

    try:
        return GatewayClient(url, key, timeout=args.timeout,
                             url_source="--url" if args.url else "TJG_URL" if os.environ.get("TJG_URL") else "URL")
    except ValidationError as err:
        raise UsageError(err.detail) from None


def cmd_client(args: argparse.Namespace) -> int:
    """Client commands against a running gateway."""
    if args.json:
        args.output = "json"
    from gateway.cli import client_cmds

    try:
        return client_cmds.run(args, _client(args))
    except (GatewayError, UsageError) as err:
        return fail(err, args.output)


def port(text: str) -> int:
    """A TCP port number (argparse type)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{n} is not a port number (1-65535)")
    return n


def seconds(text: str) -> float:
    """A positive number of seconds (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v < 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return v


def backend_kind(text: str) -> str:
    """A registered backend kind (argparse type). The vendors load only when a command names a kind, so that
    the other commands do not pay for importing every adapter."""
    from adapters.registry import load

    kinds = load().kinds()
    if text not in kinds:
        raise argparse.ArgumentTypeError(f"unknown backend kind {text!r} (known: {', '.join(kinds)})")
    return text


def build_parser(kinds: list[str] | None = None) -> argparse.ArgumentParser:
    """The argparse tree of `tjg`; `kinds` (the registered backend kinds) become the kind arguments' choices,
    for the completion scripts."""
    p = argparse.ArgumentParser(
        prog="tjg", description="trainjob-gateway: one API for training jobs on Run:ai and ModelArts.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"tjg (trainjob-gateway) {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("serve", help="run the gateway", description=(
        "Run the HTTP gateway. Reads --config, else $TJG_CONFIG, else ./config/gateway.yaml. "
        "Backends with `simulate: true` get their simulator started in-process."))
    s.add_argument("--config", help="config YAML (default: $TJG_CONFIG or config/gateway.yaml)").complete = FILE  # type: ignore[attr-defined]
    s.add_argument("--host", help="override server.host")
    s.add_argument("--port", type=port, help="override server.port")
    s.set_defaults(func=_server("cmd_serve"))

    t = sub.add_parser("translate", help="print the vendor request a spec becomes (no server needed)",
                       description="Translate SPEC for --backend and print {backend, request, report}. "
                                   "Exit 1 with the error on one line when the spec is invalid (-o json: the "
                                   "problem document, every field's error in it).")
    t.add_argument("--backend", required=True, help="backend name from the config")
    t.add_argument("-o", "--output", choices=["table", "json"], default="table",
                   help="how errors are printed: one line (default) or the JSON problem document")
    t.add_argument("--config", help="config YAML (default: $TJG_CONFIG or config/gateway.yaml)").complete = FILE  # type: ignore[attr-defined]
    t.add_argument("--strict", action="store_true", help="refuse any field the backend would drop")
    t.add_argument("spec", metavar="SPEC.yaml", help="job spec, YAML or JSON ('-' for stdin)").complete = FILE  # type: ignore[attr-defined]
    t.set_defaults(func=_server("cmd_translate"))

    ph = sub.add_parser("phases", help="print a vendor's phase table as JSON")
    ph.add_argument("vendor", type=backend_kind, choices=kinds, metavar="KIND", help="a backend kind")
    ph.set_defaults(func=_server("cmd_phases"))

    comp = sub.add_parser("completion", help="print a shell completion script (bash or zsh)", description=(
        "Print a completion script. bash: `source <(tjg completion bash)` (or save it in "
        "/etc/bash_completion.d/tjg); zsh: `tjg completion zsh > ~/.zfunc/_tjg` with ~/.zfunc on $fpath."))
    comp.add_argument("shell", choices=["bash", "zsh"])
    comp.set_defaults(func=lambda args: _completion(args.shell))

    sim = sub.add_parser("simulate", help="run a vendor simulator standalone", description=(
        "Run a vendor's simulator. Without --credentials it accepts its demo credentials "
        "(tjg-demo:tjg-demo-secret for Run:ai, TJGDEMOAK:TJGDEMOSK for ModelArts)."))
    sim.add_argument("vendor", type=backend_kind, choices=kinds, metavar="KIND",
                     help="a backend kind with a simulator")
    sim.add_argument("--port", type=port, required=True)
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--credentials", action="append", metavar="ID:SECRET",
                     help="accepted client id/secret or AK/SK pair (repeatable)")
    sim.add_argument("--faults", metavar="SPEC",
                     help="e.g. http503=0.2,http429=0.1,reset=0.05,delay_ms=20,drop_after_commit=0.05")
    sim.add_argument("--seed", type=int, default=None, help="seed for reproducible faults")
    sim.add_argument("--speed", type=float, default=1.0, help="lifecycle clock speed factor")
    sim.add_argument("--token-ttl", type=int, default=3600, help="Run:ai token lifetime in seconds")
    sim.add_argument("--sample-seconds", type=float, default=60.0,
                     help="ModelArts metrics: seconds per averaged sample (the vendor's is 60)")
    sim.add_argument("--gpus", metavar="POOL=N[,POOL=N]",
                     help="GPUs per Run:ai node pool (e.g. default=8,a100=16) or per ModelArts flavor "
                          "(e.g. modelarts.vm.gpu.a100.1=4); jobs wait when they do not fit. Unlimited without")
    sim.add_argument("--quota", metavar="PROJECT=N[,PROJECT=N]",
                     help="Run:ai only: each project's deserved GPUs per node pool (e.g. 1=4,2=4); "
                          "preemptible trainings may go over it and are preempted first")
    sim.set_defaults(func=_server("cmd_simulate"))

    def client_parser(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_ + ". Talks to --url (or $TJG_URL, default "
                           "http://127.0.0.1:8080) with --api-key (or $TJG_API_KEY).")
        c.add_argument("--url", help="gateway URL")
        c.add_argument("--api-key", help="API key")
        c.add_argument("-o", "--output", choices=FORMATS, default="table",
                       help="table (default), wide (more columns), json or yaml; errors are JSON with -o json")
        c.add_argument("--json", action="store_true", help="the same as -o json")
        c.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT,
                       help=f"seconds to wait for the gateway's answer (default {DEFAULT_TIMEOUT:g})")
        c.set_defaults(func=cmd_client, client_command=name)
        return c

    c = client_parser("submit", "submit a job spec")
    c.add_argument("spec", metavar="SPEC.yaml").complete = FILE  # type: ignore[attr-defined]
    c.add_argument("--backend", help="override the spec's backend: a name, or auto (the gateway places it; "
                   "with --dry-run: where it would go, and why)")
    c.add_argument("--dry-run", action="store_true", help="show the vendor request, submit nothing")
    c.add_argument("--strict", action="store_true", help="refuse fields the backend would drop")
    c.add_argument("--idempotency-key", help="replay-safe key (default: none)")
    c = client_parser("list", "list jobs across backends")
    c.add_argument("--backend")
    c.add_argument("--phase", help="comma list, e.g. RUNNING,QUEUED")
    c.add_argument("--project")
    c.add_argument("--label", action="append", metavar="K=V")
    c.add_argument("--name-prefix")
    c.add_argument("--kind", choices=["training", "inference"], help="only trainings or only inference workloads")
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--all", action="store_true", help="follow page tokens to the end")
    c.add_argument("--deleted", action="store_true", help="include deleted jobs (their records stay; the "
                   "phase column says `(deleted)`)")
    c.add_argument("--page-token", help="start at this page (printed after a full page)")
    c.add_argument("--watch", action="store_true", help="then follow every transition of your jobs")
    c = client_parser("get", "show one job")
    c.add_argument("id", metavar="ID")
    c.add_argument("--watch", action="store_true", help="follow its transitions until it ends; exit 0 when it "
                   "SUCCEEDED, 4 when it FAILED or was CANCELLED")
    c = client_parser("wait", "wait until a job ends; exit 0 when it SUCCEEDED, 4 when it FAILED or was CANCELLED")
    c.add_argument("id", metavar="ID")
    c = client_parser("backends", "list the configured backends: health, circuit, what each cannot do")
    c.add_argument("--capacity", action="store_true", help="show free and total GPUs by pool and type, the queue "
                   "and the projects' quotas, as each backend's sync last read them (with their age)")
    c = client_parser("why", "say why a job waits or why it ended, the free GPUs seen on every backend, and "
                      "what would help")
    c.add_argument("id", metavar="ID")
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
    c.add_argument("--tail", type=int, help="only the last N lines (0: none)")
    c.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the job ends "
                   "(polls every --interval seconds; Ctrl-C stops)")
    c.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --follow (default 2)")
    c = client_parser("scale", "set an inference workload's replicas (where the backend can: see tjg backends)")
    c.add_argument("id", metavar="ID")
    c.add_argument("--replicas", type=int, required=True, metavar="N", help="replicas to run (0: scale to zero "
                   "where the backend allows it)")
    c = client_parser("metrics", "show a job's GPU, CPU and memory use (latest, min/avg/max and a sparkline)")
    c.add_argument("id", metavar="ID")
    c.add_argument("--names", help="comma list: gpu_utilization, gpu_memory_used, gpu_memory_utilization, "
                   "cpu_utilization, memory_used (default: all but gpu_memory_utilization)")
    c.add_argument("--since", help="ISO 8601 time or an age such as 15m, 2h, 7d (default: since it started)")
    c = client_parser("usage", "GPU-hours, mean GPU utilization and cost across backends")
    c.add_argument("--group-by", default="backend", help="backend (default), tenant, project or label:KEY")
    c.add_argument("--since", help="ISO 8601 time or an age such as 7d (default: all time)")
    c.add_argument("--until", help="ISO 8601 time or an age (default: now)")
    for name, help_ in (("cancel", "stop a job for good; its record and history stay"),
                        ("suspend", "pause a job so it can be resumed (where the backend can: see tjg backends)"),
                        ("resume", "resume a suspended job"),
                        ("events", "show a job's phase transitions merged with the vendor's events"),
                        ("delete", "remove a job from its backend (cancelling it if it runs); the record "
                                   "stays, marked deleted")):
        c = client_parser(name, help_)
        c.add_argument("id", metavar="ID")
    return p


def _completion(shell: str) -> int:
    import shtab

    from adapters.registry import load

    print(shtab.complete(build_parser(load().kinds()), shell=shell), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `tjg` and `python -m gateway`."""
    if hasattr(signal, "SIGPIPE"):  # `tjg list | head` ends quietly, as other Unix tools do
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
