"""Alembic environment: runs on the connection the trace store hands it (``config.attributes``)."""
from alembic import context

from llmops.tracing.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the store always passes one
    raise RuntimeError("run migrations through llmops.tracing.store.migrate()")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  version_table=context.config.attributes.get("version_table", "alembic_version"))
with context.begin_transaction():
    context.run_migrations()
