"""SQL stores: one engine factory for SQLite (default) and PostgreSQL, and Alembic upgrades.

Each store owns its migrations directory and its own Alembic version table, so several stores
can share one PostgreSQL database.
"""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine


class SqlDialect:
    """The engine and the dialect-specific pieces a store's queries need.

    The engine hides SQL parameters from its errors (``hide_parameters``): they hold prompts,
    answers and user ids, and an error's text reaches logs and dead-letter reason headers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                                hide_parameters=True)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            self.insert = sqlite.insert
            self.least, self.greatest = func.min, func.max
        else:
            self.engine = create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True, hide_parameters=True)
            self.insert = postgresql.insert
            self.least, self.greatest = func.least, func.greatest


def upgrade_schema(engine: Engine, script_location: Path, version_table: str = "alembic_version") -> None:
    """Run the Alembic migrations in ``script_location`` up to head, on ``engine``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["version_table"] = version_table
        command.upgrade(cfg, "head")


def run_migrations_env(metadata, default_version_table: str) -> None:
    """The body of a store's Alembic ``env.py``: run on the connection :func:`upgrade_schema`
    hands over, with the store's own version table."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:  # pragma: no cover - upgrade_schema always passes one
        raise RuntimeError("run migrations through llmops.common.sql.upgrade_schema()")
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      version_table=context.config.attributes.get("version_table", default_version_table))
    with context.begin_transaction():
        context.run_migrations()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
