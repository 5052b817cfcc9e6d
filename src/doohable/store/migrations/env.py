"""Alembic environment: runs against the connection handed over by doohable.store.db."""

from alembic import context

from doohable.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # called from the alembic CLI: build an engine from the settings
    from doohable.config import get_settings
    from doohable.store.db import make_engine

    engine = make_engine(get_settings().resolved_database_url)
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
