"""One process per SQLite file: the store's file is claimed with an exclusive lock for as long as the
process serves it. Another process's rows would never be seen by this one's readers in the same way
(and two writers would contend for one file), so a second `tjg serve` on the same file stops at start.
PostgreSQL is the mode for several replicas."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from gateway.core.errors import StartupError


class FileClaim:
    """An exclusive claim on a SQLite store file (a lock on `<file>.lock`, released when the process ends).
    Claims within one process are counted: the file is given up when the last is released."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._handle = handle
        self.count = 1

    def release(self) -> None:
        """Give up this claim (closing the lock file drops the lock once no claim is left)."""
        self.count -= 1
        if self.count == 0:
            self._handle.close()
            _HELD.pop(self.path, None)


_HELD: dict[Path, FileClaim] = {}


def claim_store(url: str) -> FileClaim | None:
    """Claim the SQLite file of `url` for this process (None for PostgreSQL or an in-memory SQLite).
    Raises StartupError naming the file and the process holding it."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    path = Path(u.database).resolve()
    held = _HELD.get(path)
    if held is not None:
        held.count += 1
        return held
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    handle = lock.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StartupError(f"the SQLite store {path} is in use by {holder}; one process serves a SQLite file "
                           "(stop it, or set store.url to another file, or to PostgreSQL for several replicas)"
                           ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    claim = _HELD[path] = FileClaim(path, handle)
    return claim
