"""The migrations build exactly the schema the code declares, on each backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from core.schema import metadata, migrated
from tests.conftest import Server


def test_migrated_schema_matches_the_tables(server: Server) -> None:
    url = server.env.get("OBSERVE_DATABASE_URL") or f"sqlite+aiosqlite:///{server.data_dir / 'observe.db'}"

    async def diff() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: compare_metadata(
                        MigrationContext.configure(sync, opts={"include_name": migrated}), metadata
                    )
                )
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []


def test_sqlite_ids_only_grow(server: Server) -> None:
    """Every table whose integer key the database generates is AUTOINCREMENT on
    SQLite, so a deleted row's id is never given out again."""
    if server.backend != "sqlite":
        pytest.skip("PostgreSQL sequences never go back")
    generated = {
        table.name
        for table in metadata.sorted_tables
        if table.autoincrement_column is not None and not table.autoincrement_column.foreign_keys
    }
    assert generated >= {"monitors", "api_tokens", "orgs", "users", "audit_logs"}
    rows = server.sql(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    schema = {name: sql for name, sql in rows}
    for name in generated:
        assert "AUTOINCREMENT" in schema[name], name
