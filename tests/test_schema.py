"""The migrations build exactly the schema the code declares, on each backend."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from core.storage.tables import metadata
from tests.conftest import Server


def test_migrated_schema_matches_the_tables(server: Server) -> None:
    url = server.env.get("OBSERVE_DATABASE_URL") or f"sqlite+aiosqlite:///{server.data_dir / 'observe.db'}"

    async def diff() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []
