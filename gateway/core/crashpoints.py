"""Named points where a test run may SIGKILL this very process, to prove that each step of a state machine
survives a crash exactly there. Off unless TJG_CRASH_AT is set (`name:probability[,name:probability]`);
each crash is first appended to the file TJG_CRASH_LOG names (unbuffered), so a test can count them."""

from __future__ import annotations

import os
import random
import signal

_SPEC = {name: float(p) for name, _, p in (item.partition(":") for item in
                                            os.environ.get("TJG_CRASH_AT", "").split(",") if item)}


def crash_point(name: str) -> None:
    """SIGKILL this process here with the probability TJG_CRASH_AT gives `name` (never, when unset)."""
    p = _SPEC.get(name)
    if p is None or random.random() >= p:
        return
    where = os.environ.get("TJG_CRASH_LOG")
    if where:
        fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{name}\n".encode())
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
