"""Alembic revision scripts: frozen once released; a change to the schema is a new revision."""
