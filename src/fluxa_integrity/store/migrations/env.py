"""Alembic environment: the connection is handed in by Store.upgrade()."""

from alembic import context

from fluxa_integrity.store.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
