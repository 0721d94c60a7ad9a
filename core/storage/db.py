"""The database handle: one async engine, SQLite (WAL) or PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Table, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from core.errors import ErrorCode, ObserveError
from core.storage import faults
from core.storage.fastread import Query, run_asyncpg, run_sqlite
from core.storage.sqlite_inline import inline_creator

# Seconds a writer waits for another process's write transaction.
SQLITE_BUSY_TIMEOUT = 5.0
# Seconds to open a PostgreSQL connection; past it the call is 503 UNAVAILABLE.
PG_CONNECT_TIMEOUT = 5.0


@dataclass(slots=True)
class _Unit:
    db: Database
    stack: AsyncExitStack
    conn: AsyncConnection | None = None


_unit: ContextVar[_Unit | None] = ContextVar("observe_unit_of_work", default=None)


class Database:
    """Wraps the engine. ``write()`` hands out a connection in a transaction
    (on SQLite ``BEGIN IMMEDIATE``, so two writers queue on the lock instead
    of failing on upgrade); ``read()`` one for reads (on SQLite in autocommit,
    so a read costs no BEGIN/ROLLBACK round-trips)."""

    def __init__(self, url: str, *, echo: bool = False, read_timeout_ms: int = 0) -> None:
        parsed = make_url(url)
        self.url = url
        # PostgreSQL: the statement_timeout of read() and fetch_one() (API
        # reads); 0: none. Writes, migrations and the scheduler's writer have none.
        self.read_timeout_ms = max(0, read_timeout_ms)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        self._write_lock = asyncio.Lock()
        self._reader: sqlite3.Connection | None = None
        self._pg_pool: asyncpg.Pool | None = None
        self._pg_pool_lock = asyncio.Lock()
        self.sqlite_path: str | None = None
        if self.is_sqlite:
            if not parsed.database or parsed.database == ":memory:":
                raise ValueError("SQLite needs a file (WAL): use a path, not :memory:")
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.sqlite_path = parsed.database
            kwargs["async_creator"] = inline_creator(parsed.database, busy_timeout=SQLITE_BUSY_TIMEOUT)
            kwargs["pool_size"] = 4
            # Reads run in autocommit (no BEGIN); writes commit or roll back
            # explicitly in write(). A reset on return would only cost a hop
            # to the driver thread.
            kwargs["pool_reset_on_return"] = None
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"timeout": PG_CONNECT_TIMEOUT}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            _tune_sqlite(self.engine)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    # Database down, disk full: 503 UNAVAILABLE, not 500 (core.storage.faults).
    @faults.connections
    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        if not self.is_sqlite:
            async with self.engine.connect() as conn:
                if self.read_timeout_ms:
                    # LOCAL: it ends with the read's transaction, so the
                    # pooled connection goes back without it.
                    await conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(self.read_timeout_ms)}")
                try:
                    yield conn
                except DBAPIError as exc:
                    if isinstance(exc.orig, asyncpg.QueryCanceledError) or (
                        getattr(exc.orig, "sqlstate", None) == "57014"
                    ):
                        raise read_timed_out() from exc
                    raise
            return
        async with self._sqlite_connection() as conn:
            yield conn

    @asynccontextmanager
    async def _sqlite_connection(self) -> AsyncIterator[AsyncConnection]:
        # AsyncConnection's own __aexit__ closes through asyncio.shield(), a
        # loop turn with the connection still checked out; under load that
        # overflows the pool and churns connections. With the inline driver
        # close() never suspends, so nothing can interrupt it.
        conn = await self.engine.connect().start()
        try:
            yield conn
        finally:
            await conn.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits on success and rolls back on error.
        Inside :meth:`unit_of_work` every ``write()`` shares that unit's one
        transaction instead."""
        unit = _unit.get()
        if unit is not None and unit.db is self:
            if unit.conn is None:
                unit.conn = await unit.stack.enter_async_context(self._transaction())
            yield unit.conn
            return
        async with self._transaction() as conn:
            yield conn

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[None]:
        """Makes every ``write()`` inside one transaction, opened lazily on the
        first (so work before it, such as password hashing, holds no lock) and
        committed when the block ends, or rolled back if it raises."""
        async with AsyncExitStack() as stack:
            token = _unit.set(_Unit(self, stack))
            try:
                yield
            finally:
                _unit.reset(token)

    @faults.connections
    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        if not self.is_sqlite:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        # One writer at a time in this process: SQLite runs inline on the
        # event loop, so a second BEGIN IMMEDIATE must queue here, not block
        # the loop on the lock the first one holds.
        async with self._write_lock, self._sqlite_connection() as conn:
            await conn.execution_options(sqlite_immediate=True)
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def schema_change(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction for migrations. On SQLite, foreign keys are off
        while it runs: rebuilding a table (the only way to change most of its
        definition) drops the old one, and with them on, that drop deletes its
        rows first and cascades into their children. They are checked before
        the commit instead; a violation rolls the whole change back."""
        if not self.is_sqlite:
            async with self._transaction() as conn:
                yield conn
            return
        async with self._write_lock, self._sqlite_connection() as conn:
            # PRAGMA foreign_keys is a no-op inside a transaction: set it first.
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await conn.commit()
            try:
                await conn.execution_options(sqlite_immediate=True)
                async with conn.begin():
                    yield conn
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise RuntimeError(f"migration left rows without their parent: {broken[:5]}")
            finally:
                # Back to what every other connection of the pool has.
                await conn.execution_options(sqlite_immediate=False)
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()

    def upsert(self, table: Table) -> Any:
        """``INSERT`` for ``table`` with ``on_conflict_do_update`` (the dialect's own)."""
        return (pg_insert if self.dialect == "postgresql" else sqlite_insert)(table)

    @faults.statements
    async def fetch_one(self, query: Query, params: dict[str, Any]) -> Any | None:
        """The first row of a hot-path read, or None, without SQLAlchemy's
        execution layer: on a dedicated SQLite reader, or an asyncpg pool."""
        if not self.is_sqlite:
            if self._pg_pool is None:
                self._pg_pool = await self._open_pg_pool()
            try:
                return await run_asyncpg(self._pg_pool, query.compiled(self.engine.dialect), params)
            except asyncpg.QueryCanceledError as exc:
                raise read_timed_out() from exc
        if self._reader is None:
            self._reader = self._open_reader()
        return run_sqlite(self._reader, query.compiled(self.engine.dialect), params)

    async def _open_pg_pool(self) -> asyncpg.Pool:
        url = make_url(self.url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        async with self._pg_pool_lock:
            if self._pg_pool is None:
                settings = {"statement_timeout": str(self.read_timeout_ms)} if self.read_timeout_ms else None
                self._pg_pool = await asyncpg.create_pool(
                    dsn, min_size=1, max_size=5, server_settings=settings, timeout=PG_CONNECT_TIMEOUT
                )
            return self._pg_pool

    def _open_reader(self) -> sqlite3.Connection:
        assert self.sqlite_path is not None
        conn = sqlite3.connect(
            self.sqlite_path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        conn.execute("PRAGMA query_only=ON")
        return conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._pg_pool is not None:
            await self._pg_pool.close()
            self._pg_pool = None
        await self.engine.dispose()


def read_timed_out() -> ObserveError:
    """A read cancelled by the statement timeout: the server is busy, not broken."""
    return ObserveError(ErrorCode.ERROR_CODE_UNAVAILABLE, "the query took too long; try again", retry_after=1)


def _tune_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Only write() opens a real transaction, taking the write lock up
        # front; a read is one autocommit statement at a time.
        if conn.get_execution_options().get("sqlite_immediate", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
