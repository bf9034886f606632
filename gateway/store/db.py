"""The database under the store: one engine, one way to run a unit of work, migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import structlog
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.core.slices import Slices

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Database:
    """SQLAlchemy 2 over SQLite (WAL, the default) or PostgreSQL. Every operation is one synchronous
    unit of work run in one transaction: inline on the event loop for SQLite (its statements take
    microseconds, less than a thread hop), through SQLAlchemy's greenlet bridge on asyncpg."""

    def __init__(self, url: str, echo: bool = False) -> None:
        self.url = url
        u = make_url(url)
        self.is_sqlite = u.get_backend_name() == "sqlite"
        self.engine: AsyncEngine | None = None
        self.sync_engine: Engine | None = None
        self._writer: Connection | None = None  # SQLite: the loop's one write connection, kept open
        if self.is_sqlite:
            if u.database and u.database != ":memory:":
                Path(u.database).parent.mkdir(parents=True, exist_ok=True)
            # The built-in driver whatever the URL says (sqlite+aiosqlite is accepted): see above.
            self.sync_engine = create_engine(u.set(drivername="sqlite"), echo=echo, pool_size=2, max_overflow=4,
                                             connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(self.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(url, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=True)

    async def run(self, fn: Callable[..., T], *args: Any, write: bool = True) -> T:
        """Run `fn(connection, *args)` in one transaction (write) or on a plain connection (read)."""
        if self.sync_engine is not None:
            if write:  # one connection for every write: they run inline, one at a time (no pool round trip)
                writer = self._writer
                if writer is None or writer.closed or writer.invalidated:
                    writer = self._writer = self.sync_engine.connect()
                with writer.begin():
                    return fn(writer, *args)
            with self.sync_engine.connect() as conn:
                return fn(conn, *args)
        assert self.engine is not None
        async with (self.engine.begin() if write else self.engine.connect()) as aconn:
            return await aconn.run_sync(fn, *args)

    async def scan(self, query: Any, chunk: int) -> list[dict[str, Any]]:
        """All rows of a read query. On SQLite (which runs on the event loop) they are fetched `chunk` at a
        time from one cursor, giving the loop a turn whenever a slice is used; PostgreSQL reads do not hold
        the loop."""
        if self.sync_engine is None:
            return await self.run(lambda conn: [dict(r) for r in conn.execute(query).mappings()], write=False)
        out: list[dict[str, Any]] = []
        slices = Slices()
        with self.sync_engine.connect() as conn:
            result = conn.execute(query).mappings()
            while rows := result.fetchmany(chunk):
                out += [dict(r) for r in rows]
                await slices.turn()
        return out

    async def scan_until(self, query: Any, chunk: int, fits: Callable[[dict[str, Any]], bool]
                         ) -> tuple[list[dict[str, Any]], bool]:
        """SQLite: the rows of a read query, `chunk` at a time with the loop free in between, while
        `fits(row)` (the first row always): the rows after the first that does not fit are never read (a
        large value is read only when its row is). Returns (rows, whether it stopped early)."""
        assert self.sync_engine is not None
        out: list[dict[str, Any]] = []
        slices = Slices()
        with self.sync_engine.connect() as conn:
            result = conn.execute(query).mappings()
            while rows := result.fetchmany(chunk):
                for r in rows:
                    row = dict(r)
                    if not fits(row) and out:
                        return out, True
                    out.append(row)
                await slices.turn()
        return out, False

    async def migrate(self) -> str:
        """Bring the schema to the newest alembic revision; returns it. Several replicas may start at
        once, so on PostgreSQL the upgrade runs under a lock, in one transaction."""
        is_sqlite = self.is_sqlite

        def work(conn: Connection) -> str:
            if not is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(7270001)"))
            before = MigrationContext.configure(conn).get_current_revision()
            cfg = AlembicConfig()
            cfg.set_main_option("script_location", str(resources.files("gateway.store") / "migrations"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            after = MigrationContext.configure(conn).get_current_revision() or ""
            if after != before:
                log.info("schema_migrated", revision=after, previous=before)
            return after

        return await self.run(work)

    async def checkpoint_loop(self, every: float = 0.5) -> None:
        """SQLite: move the WAL into the database from a worker thread, so that no commit on the event
        loop ever pays for a checkpoint's fsync (auto-checkpoints are off on the loop's connections)."""
        if self.sync_engine is None:
            return
        path = make_url(self.url).database or ":memory:"

        def run() -> None:
            conn = sqlite3.connect(path, timeout=30)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(run)
            except Exception as err:
                log.warning("sqlite_checkpoint_failed", error=str(err))

    async def close(self) -> None:
        """Dispose of the connection pools."""
        if self.engine is not None:
            await self.engine.dispose()
        if self.sync_engine is not None:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self.sync_engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA wal_autocheckpoint=0")  # Database.checkpoint_loop does it off the event loop
    cur.close()
