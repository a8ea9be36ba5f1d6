"""Alembic environment of the drift store: runs on the connection the store hands it."""
from alembic import context

from llmops.drift.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the store always passes one
    raise RuntimeError("run migrations through llmops.drift.store.DriftStore")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  version_table=context.config.attributes.get("version_table", "alembic_version_drift"))
with context.begin_transaction():
    context.run_migrations()
