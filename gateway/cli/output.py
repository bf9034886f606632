"""How the CLI speaks: exit codes, one-line errors on stderr, and -o table|wide|json|yaml."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from gateway.core.errors import GatewayError, GatewayUnreachable

OK = 0
API_ERROR = 1  # the gateway answered with an error
USAGE = 2  # bad flags, a spec file that cannot be read or parsed
UNREACHABLE = 3  # no gateway at --url, or it went away
JOB_FAILED = 4  # `get --watch` / `wait`: the job ended FAILED or CANCELLED

FORMATS = ("table", "wide", "json", "yaml")


class UsageError(Exception):
    """A problem on this side (flags, files): exit 2 with the message."""


def is_tty(stream: Any = None) -> bool:
    """Whether a stream (stdout by default) is a terminal."""
    s = stream or sys.stdout
    return bool(getattr(s, "isatty", lambda: False)())


def error_line(err: GatewayError) -> str:
    """A problem in plain words on one line: what the gateway said, and which fields."""
    where = ""
    if err.errors:
        parts = []
        for e in err.errors[:5]:
            loc = ".".join(str(x) for x in e.get("loc", []) if x not in ("body",))
            parts.append(f"{loc}: {e.get('msg', '')}" if loc else str(e.get("msg", "")))
        where = " (" + "; ".join(parts) + (f"; {len(err.errors) - 5} more" if len(err.errors) > 5 else "") + ")"
    return err.detail.replace("\n", " ") + where


def fail(err: GatewayError | UsageError, output: str = "table", prog: str = "tjg") -> int:
    """Report an error (JSON problem with -o json, else one line) and return the exit code."""
    if isinstance(err, UsageError):
        print(f"{prog}: {err}", file=sys.stderr)
        return USAGE
    if output == "json":
        print(json.dumps(err.problem(), indent=2, default=str), file=sys.stderr)
    else:
        print(f"{prog}: error: {error_line(err)}", file=sys.stderr)
    return UNREACHABLE if isinstance(err, GatewayUnreachable) else API_ERROR


def emit(data: Any, output: str, human: Callable[[], str]) -> None:
    """Print `data` as JSON or YAML, or the human form (table and wide) from `human`."""
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    elif output == "yaml":
        import yaml  # (only for -o yaml: every other command starts without it)

        print(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False).rstrip())
    else:
        text = human()
        if text:
            print(text)
