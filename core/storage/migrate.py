"""Applies the Alembic migrations in ``migrations/`` to a database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from core.storage.db import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any fixed number: serialises concurrent `migrate` runs on PostgreSQL.
_PG_LOCK_KEY = 0x0B5E27E


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    command.upgrade(alembic_config(connection), "head")


async def migrate(db: Database) -> None:
    """Brings the schema to the newest revision (idempotent)."""
    async with db.schema_change() as conn:
        await conn.run_sync(_upgrade)
