"""Named points where a test run may SIGKILL this very process, to prove that each step of a state machine
survives a crash exactly there. Off unless TJG_CRASH_AT is set (`name:probability[,name:probability]`, or
`name:once`: the first time any process of the run gets there); each crash is first appended to the file
TJG_CRASH_LOG names (unbuffered), so a test can count them (and `once` can tell)."""

from __future__ import annotations

import os
import random
import signal

_SPEC = {name: p for name, _, p in (item.partition(":") for item in
                                     os.environ.get("TJG_CRASH_AT", "").split(",") if item)}


def crash_point(name: str) -> None:
    """SIGKILL this process here as TJG_CRASH_AT says for `name` (never, when unset)."""
    p = _SPEC.get(name)
    if p is None:
        return
    where = os.environ.get("TJG_CRASH_LOG")
    if p == "once":
        try:
            with open(where or "", encoding="utf-8") as f:
                if name in f.read().split():
                    return
        except OSError:
            pass
    elif random.random() >= float(p):
        return
    if where:
        fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{name}\n".encode())
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
