"""Gateway job ids: time-ordered, so they sort by creation, with a random tail."""

from __future__ import annotations

import secrets
import time


def new_job_id() -> str:
    """A new job id: 12 hex digits of milliseconds then 20 random hex digits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"
