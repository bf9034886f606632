"""Structured logging: JSON lines (console renderer on a TTY), request ids, and secret scrubbing."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO

import structlog

_SECRETS: set[str] = set()
REDACTED = "***"
# The id of the request being served, added to every log line made while serving it. Setting a ContextVar
# is a fifth of structlog.contextvars.bind_contextvars's cost, which every request paid.
REQUEST_ID: ContextVar[str | None] = ContextVar("tjg_request_id", default=None)


def register_secrets(values: Iterable[str]) -> None:
    """Add strings that must never appear in a log line (keys, client secrets, SKs)."""
    _SECRETS.update(v for v in values if v and len(v) >= 4)


# Secrets by their shape, whatever registered them (a new code path cannot leak them): a URL's password
# (`https://user:pass@host`), an Authorization or API-key header's value (e.g. inside a request head that
# aiohttp prints when it cannot parse it).
_SHAPES = (
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@'\"]*):([^@/\s'\"]+)@"), r"\1:" + REDACTED + "@"),
    (re.compile(r"(?i)((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?(?:bearer|basic|digest|token)?\s*)"
                r"[^\s'\"\\]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)((?:x-api-key|api[_-]key|x-auth-token)['\"]?\s*[:=]\s*['\"]?)[^\s'\"\\,]+"), r"\1" + REDACTED),
)


def scrub_text(value: str) -> str:
    """A string with every registered secret and every secret-shaped part (URL passwords, credentials in
    headers) replaced."""
    for s in _SECRETS:
        if s in value:
            value = value.replace(s, REDACTED)
    if "@" in value and "://" in value:
        value = _SHAPES[0][0].sub(_SHAPES[0][1], value)
    low = value.lower()
    if "authoriz" in low or "key" in low or "auth-token" in low:  # (cheap tests first: every log line passes)
        for shape, repl in _SHAPES[1:]:
            value = shape.sub(repl, value)
    return value


def scrub(value: Any) -> Any:
    """Replace every registered secret (and every secret-shaped part) inside strings, lists and dicts."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(v) for v in value)
    return value


def _scrub_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return {k: scrub(v) if k != "event" or isinstance(v, str) else v for k, v in event.items()}


class _Tee:
    """A stream that also appends what it is given to a file (opened per write: processes share it)."""

    def __init__(self, stream: TextIO, path: str) -> None:
        self.stream, self.path = stream, path

    def write(self, text: str) -> int:
        with open(self.path, "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


class _ThroughStructlog(logging.Handler):
    """Libraries' stdlib log records (aiohttp's among them) go through the same pipeline, scrubbing included:
    aiohttp printed a request head it could not parse, Authorization header and all."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger(record.name).log(record.levelno, record.getMessage(), logger=record.name,
                                                  exc_info=record.exc_info or False)
        except Exception:  # a log line must never take the process down
            self.handleError(record)


def _request_id_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    rid = REQUEST_ID.get()
    if rid is not None:
        event.setdefault("request_id", rid)
    return event


def configure_logging(level: str = "info", stream: TextIO | None = None, json_lines: bool | None = None) -> None:
    """Configure structlog for the process: JSON by default, a console renderer on a TTY."""
    out: Any = stream or sys.stderr
    use_json = json_lines if json_lines is not None else not out.isatty()
    copy = os.environ.get("TJG_LOG_COPY")
    if copy:  # every rendered line also appended to this file (a test run scans them all for secrets)
        out = _Tee(out, copy)
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            _request_id_processor,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _ThroughStructlog)] + [_ThroughStructlog()]
    root.setLevel(logging.WARNING)
