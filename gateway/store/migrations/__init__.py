"""The store's schema history as alembic revisions (see env.py; the revisions are in versions/)."""
