"""Alembic environment of the trace store."""
from llmops.common.sql import run_migrations_env
from llmops.tracing.schema import metadata

run_migrations_env(metadata, "alembic_version")
