"""Structured logging: JSON lines (console renderer on a TTY), request ids, and secret scrubbing."""

from __future__ import annotations

import logging
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


def scrub(value: Any) -> Any:
    """Replace every registered secret inside strings, lists and dicts."""
    if isinstance(value, str):
        for s in _SECRETS:
            if s in value:
                value = value.replace(s, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(v) for v in value)
    return value


def _scrub_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _SECRETS:
        return event
    return {k: scrub(v) if k != "event" or isinstance(v, str) else v for k, v in event.items()}


def _request_id_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    rid = REQUEST_ID.get()
    if rid is not None:
        event.setdefault("request_id", rid)
    return event


def configure_logging(level: str = "info", stream: TextIO | None = None, json_lines: bool | None = None) -> None:
    """Configure structlog for the process: JSON by default, a console renderer on a TTY."""
    out = stream or sys.stderr
    use_json = json_lines if json_lines is not None else not out.isatty()
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
