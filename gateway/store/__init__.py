"""The job store, one object per concern over one database:

- `jobs` (gateway.store.jobs): job rows, their statuses and the submit confirmations;
- `events` (gateway.store.events): transitions and the webhook outbox written with them;
- `keys` (gateway.store.keys): idempotency keys;
- `leases` (gateway.store.leases): which replica runs which background work;
- `capacity` (gateway.store.capacity): the latest capacity read from each backend;
- `attempts` (gateway.store.attempts): the ended attempts of jobs with retry rules;
- `db` (gateway.store.db) and `schema` (gateway.store.schema): the engine and tables; the schema's
  history is the alembic revisions in gateway/store/migrations.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.store.attempts import AttemptRows
from gateway.store.capacity import CapacityRows
from gateway.store.db import Database
from gateway.store.events import Events
from gateway.store.jobs import JobRows, ListFilters
from gateway.store.keys import IdempotencyKeys
from gateway.store.leases import Leases
from gateway.store.paging import decode_token, encode_token

__all__ = ["ListFilters", "Store", "decode_token", "encode_token"]


class Store:
    """The store's parts, sharing one database."""

    def __init__(self, url: str, echo: bool = False,
                 webhook_targets: Callable[[str | None], list[str]] | None = None) -> None:
        self.db = Database(url, echo)
        self.events = Events(self.db, webhook_targets)
        self.jobs = JobRows(self.db, self.events)
        self.keys = IdempotencyKeys(self.db)
        self.leases = Leases(self.db)
        self.capacity = CapacityRows(self.db)
        self.attempts = AttemptRows(self.db)

    @property
    def url(self) -> str:
        """The database URL."""
        return self.db.url

    @property
    def is_sqlite(self) -> bool:
        """True for the single-process SQLite store."""
        return self.db.is_sqlite

    async def migrate(self) -> str:
        """Apply pending schema migrations; returns the schema's revision."""
        return await self.db.migrate()

    async def close(self) -> None:
        """Close the database."""
        await self.db.close()
