"""bench.logs' two engines: where a server's data lives, direct access to its
log store (loading, counting), and the engine's raw batched insert.

The raw inserts and the loads use the stores' own DDL and row encoding (the
private ``_create_day``/``_row_values`` and the FTS text ``indexed_text`` of
``core.logs.sqlite_store``, ``_row_values`` of ``core.logs.postgres_store``),
so "raw" differs from the server only by what the server adds (HTTP, OTLP
decoding, caps, the writer), never by the table layout. The rows are
encoded before the clock starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from bench.logs_data import SERVICES, Spec, resource_of
from core.accounts.admin import create_owner
from core.logs import postgres_store, sqlite_store
from core.logs.engines import sqlite_logs_path
from core.logs.records import LogRecord, level_of
from core.logs.store import SEQ_BITS, SEQ_MASK, IdSource, day_of_id
from core.storage.db import Database
from core.storage.migrate import migrate

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
# The run's databases: OBSERVE_BENCH_LOGS_DB (default observe_bench_logs) and
# that name + "_raw", so two engineers' runs on one PostgreSQL do not drop each other's.
BENCH_DB = os.environ.get("OBSERVE_BENCH_LOGS_DB") or "observe_bench_logs"
RAW_DB = BENCH_DB + "_raw"
RETENTION_DAYS = 14  # the server's default (OBSERVE_LOG_RETENTION_DAYS)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Engine(Protocol):
    name: str

    def unavailable(self) -> str:
        """Why this engine cannot run here ("" when it can)."""
        ...

    def reset(self) -> None: ...
    def create_user(self, data_dir: Path) -> tuple[int, str]: ...
    def server_env(self, data_dir: Path) -> dict[str, str]: ...
    def count_rows(self) -> int: ...
    def load(self, org_id: int, specs: Iterable[Spec], batch: int) -> None: ...
    def raw_insert(self, tmp: Path, org_id: int, records: list[LogRecord], batch: int) -> dict[str, float]: ...
    def size_note(self) -> str: ...
    def cleanup_files(self, tmp: Path) -> None: ...
    def drop(self) -> None: ...


def engine_for(name: str) -> Engine:
    return SqliteEngine() if name == "sqlite" else PostgresEngine()


async def _owner(url: str, data_dir: Path) -> tuple[int, str]:
    db = Database(url)
    try:
        await migrate(db)
        made = await create_owner(db, email=f"bench-logs-{os.getpid()}@example.com", name="bench", org_name="bench",
                                  password=None, mint_token=True)  # fmt: skip
    finally:
        await db.close()
    return int(made["orgId"]), str(made["token"])


def _rows(org_id: int, records: list[LogRecord]) -> list[Any]:
    return IdSource(RETENTION_DAYS).assign([(org_id, r) for r in records], datetime.now(UTC))


def _chunks(specs: Iterable[Spec], size: int) -> Iterator[list[tuple[int, Spec]]]:
    """(sequence number, spec) in lists of ``size``: the number is an id's low bits."""
    chunk: list[tuple[int, Spec]] = []
    for i, spec in enumerate(specs):
        chunk.append((i & SEQ_MASK, spec))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _gib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*")) / 2**30


class SqliteEngine:
    name = "sqlite"

    def __init__(self) -> None:
        self.data_dir: Path | None = None

    @property
    def logs_path(self) -> Path:
        assert self.data_dir is not None
        return Path(sqlite_logs_path(str(self.data_dir / "observe.db")))

    def unavailable(self) -> str:
        return ""

    def reset(self) -> None:
        self.data_dir = None

    def create_user(self, data_dir: Path) -> tuple[int, str]:
        self.data_dir = data_dir
        return asyncio.run(_owner(f"sqlite+aiosqlite:///{data_dir / 'observe.db'}", data_dir))

    def server_env(self, data_dir: Path) -> dict[str, str]:
        return {"OBSERVE_DATA_DIR": str(data_dir)}

    def count_rows(self) -> int:
        with contextlib.closing(sqlite3.connect(self.logs_path)) as conn:
            tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE name GLOB 'logs_[0-9]*'")
                      if n[5:].isdigit()]  # fmt: skip
            return sum(int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables)

    def load(self, org_id: int, specs: Iterable[Spec], batch: int) -> None:
        """The store's tables and row values, ``batch`` rows a transaction, written
        on a thread while the next batch is built (sqlite3 releases the GIL)."""
        store = sqlite_store.SqliteLogStore(str(self.logs_path))
        conn = sqlite3.connect(self.logs_path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536", "temp_store=MEMORY"):
            conn.execute(f"PRAGMA {pragma}")
        days: set[date] = set()

        def write(rows: list[tuple[Any, ...]]) -> None:
            by_day: dict[date, list[tuple[Any, ...]]] = {}
            for row in rows:
                by_day.setdefault(day_of_id(row[0]), []).append(row)
            conn.execute("BEGIN IMMEDIATE")
            for day, day_rows in by_day.items():
                if day not in days:
                    store._create_day(conn, day)
                    days.add(day)
                table = sqlite_store._table(day)
                conn.executemany(f"INSERT INTO {table} ({sqlite_store._COLUMNS}) VALUES ({','.join('?' * 15)})",
                                 day_rows)  # fmt: skip
                conn.executemany(f"INSERT INTO {table}_fts (rowid, message) VALUES (?, ?)",
                                 [(row[0], sqlite_store.indexed_text(row[6])) for row in day_rows])  # fmt: skip
            conn.execute("COMMIT")

        observed = time.time_ns() // 1000
        resources = {s: orjson.dumps(resource_of(s)) for s in SERVICES}
        with ThreadPoolExecutor(1) as pool:
            pending: Future[None] | None = None
            for chunk in _chunks(specs, batch):
                rows = [((s.time_ns // 1_000_000) << SEQ_BITS | i, org_id, s.time_ns // 1000, observed, s.severity,
                         level_of(s.severity).upper(), s.message, s.service, s.trace_id.hex(), s.span_id.hex(),
                         orjson.dumps(s.attributes), resources[s.service], "bench", "1.0", 0)
                        for i, s in chunk]  # fmt: skip
                if pending is not None:
                    pending.result()
                pending = pool.submit(write, rows)
            if pending is not None:
                pending.result()
        conn.close()

    def raw_insert(self, tmp: Path, org_id: int, records: list[LogRecord], batch: int) -> dict[str, float]:
        rows = _rows(org_id, records)
        values = [sqlite_store._row_values(r, sqlite_store._json(r.record.resource)) for r in rows]
        texts = [(r.id, sqlite_store.indexed_text(r.record.message)) for r in rows]
        out: dict[str, float] = {}
        for variant, fts in (("raw SQLite: day table + FTS5, executemany", True),
                             ("raw SQLite: day table, no FTS5", False)):  # fmt: skip
            path = tmp / f"raw-{int(fts)}.db"
            with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
                for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536", "temp_store=MEMORY"):
                    conn.execute(f"PRAGMA {pragma}")
                store = sqlite_store.SqliteLogStore(str(path))
                for day in sorted({day_of_id(r.id) for r in rows}):
                    store._create_day(conn, day)
                    if not fts:
                        conn.execute(f"DROP TABLE {sqlite_store._table(day)}_fts")
                table = sqlite_store._table(day_of_id(rows[0].id))
                insert = f"INSERT INTO {table} ({sqlite_store._COLUMNS}) VALUES ({','.join('?' * 15)})"
                started = time.perf_counter()
                for i in range(0, len(values), batch):
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(insert, values[i : i + batch])
                    if fts:
                        conn.executemany(
                            f"INSERT INTO {table}_fts (rowid, message) VALUES (?, ?)", texts[i : i + batch]
                        )
                    conn.execute("COMMIT")
                out[variant] = len(values) / (time.perf_counter() - started)
            for f in tmp.glob(f"raw-{int(fts)}.db*"):
                f.unlink()
        return out

    def size_note(self) -> str:
        return f"{self.logs_path.name}: {_gib(self.logs_path):.2f} GiB"

    def cleanup_files(self, tmp: Path) -> None:
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def drop(self) -> None:
        pass


class PostgresEngine:
    name = "postgres"

    def __init__(self) -> None:
        url = make_url(os.environ.get("OBSERVE_TEST_DATABASE_URL") or DEFAULT_PG)
        self.admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.url = url.set(drivername="postgresql+asyncpg", database=BENCH_DB).render_as_string(hide_password=False)
        self.raw_url = url.set(drivername="postgresql+asyncpg", database=RAW_DB).render_as_string(hide_password=False)

    @staticmethod
    def _dsn(url: str) -> str:
        return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def unavailable(self) -> str:
        try:
            asyncio.run(self._admin("SELECT 1"))
        except (OSError, asyncpg.PostgresError) as exc:
            return f"no PostgreSQL at {make_url(self.admin_dsn).render_as_string()}: {exc}"
        return ""

    def reset(self) -> None:
        asyncio.run(self._admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)", f"CREATE DATABASE {BENCH_DB}"))

    def create_user(self, data_dir: Path) -> tuple[int, str]:
        return asyncio.run(_owner(self.url, data_dir))

    def server_env(self, data_dir: Path) -> dict[str, str]:
        return {"OBSERVE_DATA_DIR": str(data_dir), "OBSERVE_DATABASE_URL": self.url}

    def count_rows(self) -> int:
        async def count() -> int:
            conn = await asyncpg.connect(self._dsn(self.url))
            try:
                return int(await conn.fetchval(f"SELECT count(*) FROM {postgres_store.TABLE}"))
            finally:
                await conn.close()

        return asyncio.run(count())

    def load(self, org_id: int, specs: Iterable[Spec], batch: int) -> None:
        asyncio.run(self._load(org_id, specs, batch))

    async def _load(self, org_id: int, specs: Iterable[Spec], batch: int) -> None:
        """The store's partitions (its own open/_ensure_days) and row values,
        one binary COPY of ``batch`` rows a transaction, encoded as it streams."""
        db = Database(self.url)
        store = postgres_store.PostgresLogStore(db)
        await store.open()
        conn = await asyncpg.connect(self._dsn(self.url))
        await conn.set_type_codec("tsvector", schema="pg_catalog", encoder=bytes, decoder=bytes, format="binary")
        observed = datetime.now(UTC)
        resources = {s: orjson.dumps(resource_of(s)).decode() for s in SERVICES}

        def encode(item: tuple[int, Spec]) -> tuple[Any, ...]:
            i, s = item
            ts = _EPOCH + timedelta(microseconds=s.time_ns // 1000)
            return ((s.time_ns // 1_000_000) << SEQ_BITS | i, org_id, ts, observed, s.severity,
                    level_of(s.severity).upper(), s.message, s.service, s.trace_id.hex(), s.span_id.hex(),
                    orjson.dumps(s.attributes).decode(), resources[s.service], "bench", "1.0", 0,
                    postgres_store.tsvector_binary(s.message))  # fmt: skip

        try:
            for chunk in _chunks(specs, batch):
                first = day_of_id((chunk[0][1].time_ns // 1_000_000) << SEQ_BITS)
                last = day_of_id((chunk[-1][1].time_ns // 1_000_000) << SEQ_BITS)
                await store._ensure_days({first + timedelta(days=d) for d in range((last - first).days + 1)})
                await conn.copy_records_to_table(postgres_store.TABLE, records=map(encode, chunk),
                                                 columns=list(postgres_store._COLUMNS))  # fmt: skip
            await conn.execute(f"ANALYZE {postgres_store.TABLE}")
        finally:
            await conn.close()
            await store.close()
            await db.close()

    def raw_insert(self, tmp: Path, org_id: int, records: list[LogRecord], batch: int) -> dict[str, float]:
        rows = _rows(org_id, records)
        values = [postgres_store._row_values(r) for r in rows]
        return asyncio.run(self._raw(rows, values, batch))

    async def _raw(self, rows: list[Any], values: list[tuple[Any, ...]], batch: int) -> dict[str, float]:
        await self._admin(f"DROP DATABASE IF EXISTS {RAW_DB} WITH (FORCE)", f"CREATE DATABASE {RAW_DB}")
        db = Database(self.raw_url)
        store = postgres_store.PostgresLogStore(db)
        await store.open()
        await store.write(rows[:1])  # creates the partitions the rows need
        await db.close()
        table, columns = postgres_store.TABLE, list(postgres_store._COLUMNS)
        out: dict[str, float] = {}
        conn = await asyncpg.connect(self._dsn(self.raw_url))
        try:
            await conn.set_type_codec("tsvector", schema="pg_catalog", encoder=bytes, decoder=bytes, format="binary")
            for variant, gin in (("raw PostgreSQL: COPY, same table + GIN", True),
                                 ("raw PostgreSQL: COPY, no GIN index", False)):  # fmt: skip
                await conn.execute(f"TRUNCATE {table}")
                if not gin:
                    await conn.execute(f"DROP INDEX IF EXISTS {table}_words")
                started = time.perf_counter()
                for i in range(0, len(values), batch):
                    await conn.copy_records_to_table(table, records=values[i : i + batch], columns=columns)
                out[variant] = len(values) / (time.perf_counter() - started)
        finally:
            await conn.close()
            await self._admin(f"DROP DATABASE IF EXISTS {RAW_DB} WITH (FORCE)")
        return out

    def size_note(self) -> str:
        async def size() -> str:
            conn = await asyncpg.connect(self._dsn(self.url))
            try:
                return str(await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))"))
            finally:
                await conn.close()

        return f"database {BENCH_DB}: {asyncio.run(size())}"

    def cleanup_files(self, tmp: Path) -> None:
        pass

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run(self._admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
