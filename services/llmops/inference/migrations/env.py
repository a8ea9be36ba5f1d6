"""Alembic environment of the deployment store (its own version table: it may share a database)."""
from llmops.common.sql import run_migrations_env
from llmops.inference.config_schema import metadata

run_migrations_env(metadata, "alembic_version_deployments")
