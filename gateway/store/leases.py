"""Named leases, so that one replica at a time runs each piece of background work."""

from __future__ import annotations

import time

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from gateway.store.db import Database
from gateway.store.schema import leases


class Leases:
    """Take, renew and give up leases with an expiry."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew a named lease; True while `owner` holds it."""
        upsert = sqlite.insert if self.db.is_sqlite else postgresql.insert

        def work(conn: Connection) -> bool:
            now = time.time()
            stmt = upsert(leases).values(name=name, owner=owner, expires_at=now + ttl)
            stmt = stmt.on_conflict_do_update(
                index_elements=[leases.c.name], set_={"owner": owner, "expires_at": now + ttl},
                where=or_(leases.c.expires_at < now, leases.c.owner == owner))
            conn.execute(stmt)
            holder = conn.execute(select(leases.c.owner).where(leases.c.name == name)).scalar_one()
            return bool(holder == owner)

        return await self.db.run(work)

    async def release(self, name: str, owner: str) -> None:
        """Give a lease up (on shutdown) so another replica takes over at once."""
        await self.db.run(lambda conn: conn.execute(delete(leases).where(leases.c.name == name,
                                                                         leases.c.owner == owner)))
