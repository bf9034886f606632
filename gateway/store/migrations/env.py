"""Alembic's entry point, run by gateway.store.db.Database.migrate on a connection it passes in
(`config.attributes["connection"]`), inside that connection's transaction."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
# SQLite alters most things only by copying a table: batch mode does that where a revision needs it.
context.configure(connection=connection, target_metadata=None,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
