"""The PostgreSQL log store: one table in the main database, a partition per UTC day.

``log_records`` is partitioned by range of ``id``; a record's id carries its
filing millisecond (``core.logs.store``), so the partition of day D is
``log_records_YYYYMMDD`` holding ``day_bounds(D)``, a time range of a search
is an id range (the planner prunes partitions), and retention drops whole
partitions. The store owns this DDL (not Alembic): ``open()`` creates the
table and its indexes if missing, ``write()`` creates the day partitions its
rows need. Creation and dropping run in short transactions of their own
under one advisory lock, so two processes creating the same day queue
instead of failing, and a write transaction never holds the parent's
ACCESS EXCLUSIVE lock (which ``CREATE TABLE … PARTITION OF`` takes).

Indexes (declared on the parent, so every partition gets them):
``(org_id, id)`` as the primary key (searches are per org, newest first, so
one btree serves the key, the uniqueness check and the newest-first scan),
GIN on ``words`` (the message's tokens), ``(org_id, service, id)`` (a rare
service's newest records without walking the day), and ``trace_id`` where
present. Searches go day by day, newest first, until the page is full.

Text matching: ``words`` is a tsvector built here from
``core.logs.query.message_tokens`` with positions (PostgreSQL's own parser
splits text differently from the query language; SQLite's index is fed the
same tokens), and a query's tokens become a tsquery literal (lexemes ``<->``-adjacent, the
last with ``:*`` for a prefix), never through ``to_tsvector``/``to_tsquery``.
tsvector has limits SQLite FTS5 has not: a lexeme is at most 2,047 bytes
(a longer token is stored as its start and a hash, see ``lexeme``, so it
still equals only itself), positions end at 16,383 and a lexeme keeps 256
of them. A single-token query is exact regardless; a phrase whose only
occurrence lies past those limits in a message is not found there.

Attributes are ``jsonb``; ``attr.k:v`` compares ``->> k`` (strings as they
are, numbers and booleans as PostgreSQL prints them) restricted by
``jsonb_typeof`` so arrays, maps and null never equal a value. PostgreSQL
prints a number as its exact decimal, JSON (orjson) writes large and tiny
floats with an exponent (``1e20``): an equality value in that form is
translated to the decimal form; a prefix of it is not (documented edge).
"""

from __future__ import annotations

import hashlib
import re
import struct
import weakref
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.logs.query import And, Attr, Field, Level, Node, Not, Text, message_tokens
from core.logs.records import record_of
from core.logs.store import IdCollisionError, Row, StoredRecord, day_bounds, day_of_id
from core.storage.db import Database

TABLE = "log_records"
_PARTITION = re.compile(rf"{TABLE}_(\d{{8}})")
# One advisory lock key for all of this store's DDL ("observe log records" as a number).
_DDL_LOCK = 0x6F62_6C6F_6773
_LOCK_TIMEOUT = "10s"

_CREATE = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    id bigint NOT NULL,
    org_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    observed_at timestamptz NOT NULL,
    severity smallint NOT NULL,
    severity_text text NOT NULL,
    message text NOT NULL,
    service text,
    trace_id text COLLATE "C",
    span_id text COLLATE "C",
    attributes jsonb NOT NULL,
    resource jsonb NOT NULL,
    scope_name text NOT NULL,
    scope_version text NOT NULL,
    dropped_attributes bigint NOT NULL,
    words tsvector NOT NULL,
    PRIMARY KEY (org_id, id)
) PARTITION BY RANGE (id)""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_words ON {TABLE} USING gin (words)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_trace_id ON {TABLE} (trace_id) WHERE trace_id IS NOT NULL",
    # service:x newest first stops at the page even for a rare service.
    f"CREATE INDEX IF NOT EXISTS {TABLE}_service ON {TABLE} (org_id, service, id)",
)

_COLUMNS = (
    "id",
    "org_id",
    "ts",
    "observed_at",
    "severity",
    "severity_text",
    "message",
    "service",
    "trace_id",
    "span_id",
    "attributes",
    "resource",
    "scope_name",
    "scope_version",
    "dropped_attributes",
    "words",
)
_SELECT = (
    "SELECT id, org_id, ts, observed_at, severity, severity_text, message, service, trace_id, span_id,"
    f" attributes::text, resource::text, scope_name, scope_version, dropped_attributes FROM {TABLE}"
)


def partition_name(day: date) -> str:
    return f"{TABLE}_{day:%Y%m%d}"


class PostgresLogStore:
    """Log records in daily partitions of ``log_records`` (see the module's docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._days: set[date] = set()  # partitions known to exist
        # asyncpg connections that have the binary tsvector encoder set.
        self._coded: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()

    async def open(self) -> None:
        async with self.db.write() as conn:
            await self._ddl_lock(conn)
            for statement in _CREATE:
                await conn.exec_driver_sql(statement)
        self._days = set(await self._partitions())
        today = datetime.now(UTC).date()
        await self._ensure_days({today, today + timedelta(days=1)})

    async def close(self) -> None:
        self._days.clear()

    # ------------------------------------------------------------ partitions

    async def _ddl_lock(self, conn: AsyncConnection) -> None:
        await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
        await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_DDL_LOCK})")

    async def _partitions(self) -> dict[date, str]:
        """The day partitions that exist, by day (names that are not ours are ignored)."""
        sql = (
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(:parent)"
        )
        async with self.db.read() as conn:
            names = (await conn.execute(text(sql), {"parent": TABLE})).scalars().all()
        found: dict[date, str] = {}
        for name in names:
            matched = _PARTITION.fullmatch(name)
            if matched:
                found[datetime.strptime(matched[1], "%Y%m%d").replace(tzinfo=UTC).date()] = name
        return found

    async def _ensure_days(self, days: Iterable[date]) -> None:
        missing = sorted(set(days) - self._days)
        if not missing:
            return
        async with self.db.write() as conn:
            await self._ddl_lock(conn)
            for day in missing:
                low, high = day_bounds(day)
                # Names and bounds come from dates and integers, never from input.
                await conn.exec_driver_sql(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF {TABLE}"
                    f" FOR VALUES FROM ({int(low)}) TO ({int(high)})"
                )
        self._days.update(missing)

    async def drop_days_before(self, day: date) -> int:
        dropped = 0
        for old, name in sorted((await self._partitions()).items()):
            if old >= day:
                continue
            async with self.db.write() as conn:
                await self._ddl_lock(conn)
                await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            self._days.discard(old)
            dropped += 1
        return dropped

    # ------------------------------------------------------------ write

    async def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        await self._ensure_days({day_of_id(row.id) for row in rows})
        try:
            await self._copy(rows)
        except asyncpg.CheckViolationError:
            # "no partition found": another process dropped a day we knew of.
            self._days = set(await self._partitions())
            await self._ensure_days({day_of_id(row.id) for row in rows})
            await self._copy(rows)

    async def _copy(self, rows: Sequence[Row]) -> None:
        """One binary COPY in one transaction. The rows are encoded as the COPY
        streams (a generator), so the server inserts one chunk while Python
        encodes the next: on two cores that overlap is most of the speed."""
        try:
            async with self.db.write() as conn:
                driver = await _driver(conn)
                if driver not in self._coded:
                    await driver.set_type_codec(
                        "tsvector", schema="pg_catalog", encoder=bytes, decoder=bytes, format="binary"
                    )
                    self._coded.add(driver)
                await driver.copy_records_to_table(TABLE, records=map(_row_values, rows), columns=_COLUMNS)
        except asyncpg.UniqueViolationError:
            raise IdCollisionError("a record id of the batch is taken") from None

    # ------------------------------------------------------------ read

    async def _days_between(self, low_id: int, high_id: int) -> list[date]:
        """The partitions overlapping ``[low_id, high_id)``, newest first. The
        catalog is asked again when the range reaches past the days this
        process knows (another process may have made them)."""
        if high_id <= low_id:
            return []
        first, last = day_of_id(max(low_id, 0)), day_of_id(high_id - 1)
        if not self._days or first < min(self._days) or last > max(self._days):
            self._days = set(await self._partitions())
        if not self._days:
            return []
        # Every calendar day between the known ends: a day another process
        # made between them is searched too (a day with no partition is
        # pruned to nothing by the planner).
        first, last = max(first, min(self._days)), min(last, max(self._days))
        return [last - timedelta(days=n) for n in range((last - first).days + 1)]

    async def search(
        self, org_id: int, query: Node | None, *, low_id: int, high_id: int, limit: int
    ) -> list[StoredRecord]:
        """Day by day, newest first, until the page is full: a common phrase
        costs its matches of one day, not of the whole range (a GIN bitmap
        has no time order, so each day's matches are sorted)."""
        found: list[StoredRecord] = []
        days = await self._days_between(low_id, high_id)
        if not days:
            return found
        async with self.db.read() as conn:
            driver = await _custom_plans(conn)
            for day in days:
                day_low, day_high = day_bounds(day)
                where, args = compile_where(org_id, query, low_id=max(low_id, day_low), high_id=min(high_id, day_high))
                args.append(limit - len(found))
                sql = f"{_SELECT} WHERE {where} ORDER BY id DESC LIMIT ${len(args)}::int"
                found.extend(_stored(r) for r in await driver.fetch(sql, *args))
                if len(found) >= limit:
                    break
        return found

    async def count(
        self, org_id: int, query: Node | None, *, low_id: int, high_id: int, group_by: str = ""
    ) -> dict[str | None, int]:
        if group_by not in ("", "service"):
            raise ValueError(f"cannot group log counts by {group_by!r}")
        where, args = compile_where(org_id, query, low_id=low_id, high_id=high_id)
        async with self.db.read() as conn:
            driver = await _custom_plans(conn)
            if not group_by:
                return {None: int(await driver.fetchval(f"SELECT count(*) FROM {TABLE} WHERE {where}", *args))}
            found = await driver.fetch(f"SELECT service, count(*) FROM {TABLE} WHERE {where} GROUP BY service", *args)
        return {r[0]: int(r[1]) for r in found}


async def _driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy one (in its transaction)."""
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


async def _custom_plans(conn: AsyncConnection) -> asyncpg.Connection:
    """The driver connection, planning each statement with its values: a
    generic plan cannot see how common a word is, and with a common one picks
    the GIN bitmap and sorts a large share of the day (measured: 2 ms → 700
    ms) instead of walking the primary key newest first."""
    # Through SQLAlchemy, which begins the read's transaction (LOCAL ends with it).
    await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    return await _driver(conn)


def _row_values(row: Row) -> tuple[Any, ...]:
    r = row.record
    return (
        row.id,
        row.org_id,
        r.timestamp,
        r.observed_at,
        r.severity_number,
        r.severity_text,
        r.message,
        r.service,
        r.trace_id,
        r.span_id,
        orjson.dumps(r.attributes).decode(),
        orjson.dumps(r.resource).decode(),
        r.scope_name,
        r.scope_version,
        r.dropped_attributes_count,
        tsvector_binary(r.message),
    )


def _stored(r: asyncpg.Record) -> StoredRecord:
    record = record_of(
        r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], orjson.loads(r[10]), orjson.loads(r[11]), r[12], r[13], r[14]
    )
    return StoredRecord(r[0], r[1], record)


# ---------------------------------------------------------------- words

MAX_LEXEME_BYTES = 2047  # tsvector's limit per lexeme
MAX_POSITION = 16383  # tsvector's last position
MAX_POSITIONS = 256  # positions tsvector keeps per lexeme


_LONG_KEPT = MAX_LEXEME_BYTES - 17  # bytes of a long token kept before its "#" and hash


def _cut(data: bytes, limit: int) -> bytes:
    return data[:limit].decode(errors="ignore").encode()


def lexeme(token: str) -> bytes:
    """A token as a tsvector/tsquery lexeme: its UTF-8; past the lexeme limit
    its first bytes (at a character boundary), ``#`` and 16 hex digits of a
    hash of the whole token, so a long token still equals only itself
    (tokens never hold ``#``, so these never equal an ordinary one)."""
    data = token.encode()
    if len(data) <= MAX_LEXEME_BYTES:
        return data
    return _cut(data, _LONG_KEPT) + b"#" + hashlib.blake2b(data, digest_size=8).hexdigest().encode()


def prefix_lexeme(token: str) -> bytes:
    """The lexeme a prefix query looks for: the token, or for one longer than a
    long token's kept part, that part (a prefix that long compares only it)."""
    data = token.encode()
    return data if len(data) <= _LONG_KEPT - 3 else _cut(data, _LONG_KEPT - 3)


_COUNT = struct.Struct("!i")
_ONE_POSITION = struct.Struct("!HH")


def tsvector_binary(message: str) -> bytes:
    """The message's tokens as tsvector in PostgreSQL's binary format (tsvectorsend):
    the lexeme count, then each lexeme NUL-terminated with its 1-based positions.
    The server sorts the lexemes; this is the hot loop of ingest, hence its shape."""
    positions: dict[str, list[int]] = {}
    at = 0
    for at, token in enumerate(message_tokens(message), start=1):
        kept = positions.get(token)
        if kept is None:
            positions[token] = [at]
        else:
            kept.append(at)
    if at > MAX_POSITION or (positions and max(map(len, positions)) * 4 > MAX_LEXEME_BYTES):
        return _tsvector_binary_at_limits(positions)
    parts = [_COUNT.pack(len(positions))]
    for token, kept in positions.items():
        if len(kept) == 1:
            parts.append(token.encode() + b"\x00" + _ONE_POSITION.pack(1, kept[0]))
        else:
            kept = kept[:MAX_POSITIONS]
            parts.append(token.encode() + b"\x00" + struct.pack(f"!H{len(kept)}H", len(kept), *kept))
    return b"".join(parts)


def _tsvector_binary_at_limits(positions: dict[str, list[int]]) -> bytes:
    """The same for a message past tsvector's limits: long tokens cut (two may
    become one lexeme), positions past the last dropped, 256 kept per lexeme."""
    merged: dict[bytes, list[int]] = {}
    for token, kept in positions.items():
        merged.setdefault(lexeme(token), []).extend(p for p in kept if p <= MAX_POSITION)
    parts = [_COUNT.pack(len(merged))]
    for word, kept in merged.items():
        kept = sorted(kept)[:MAX_POSITIONS]
        parts.append(word + b"\x00" + struct.pack(f"!H{len(kept)}H", len(kept), *kept))
    return b"".join(parts)


def tsquery_text(node: Text) -> str:
    """A Text node as a tsquery literal: quoted lexemes, adjacent, the last a prefix when asked."""
    words = [lexeme(t) for t in node.tokens]
    if node.prefix:
        words[-1] = prefix_lexeme(node.tokens[-1])
    quoted = ["'" + w.decode().replace("\\", "\\\\").replace("'", "''") + "'" for w in words]
    if node.prefix:
        quoted[-1] += ":*"
    return " <-> ".join(quoted)


# ---------------------------------------------------------------- the query

_FIELD_COLUMNS = {"service": "service", "traceId": "trace_id", "spanId": "span_id"}


class _Where:
    """Collects ``$n`` parameters while the AST compiles to SQL."""

    def __init__(self, args: list[Any]) -> None:
        self.args = args

    def param(self, value: Any, cast: str) -> str:
        self.args.append(value)
        return f"${len(self.args)}::{cast}"

    def compile(self, node: Node) -> tuple[str, bool]:
        """SQL for ``node`` and whether it may be NULL where match.py says False.

        A NULL inside AND/OR without NOT above it acts as False in WHERE; under
        NOT it would not, so ``Not`` coalesces a nullable operand first.
        """
        if isinstance(node, Text):
            return f"words @@ {self.param(tsquery_text(node), 'text')}::tsquery", False
        if isinstance(node, Level):
            return f"severity BETWEEN {self.param(node.low, 'int')} AND {self.param(node.high, 'int')}", False
        if isinstance(node, Field):
            column = _FIELD_COLUMNS[node.name]
            if node.prefix and node.value and column != "service":
                # Hex ids in C order: the prefix is a range the trace_id index serves.
                low = self.param(node.value, "text")
                high = self.param(node.value[:-1] + chr(ord(node.value[-1]) + 1), "text")
                return f"({column} >= {low} AND {column} < {high})", True
            if node.prefix:
                value = self.param(node.value, "text")
                return f"(starts_with({column}, {value}) AND {column} <> '')", True
            return f"{column} = {self.param(node.value, 'text')}", True
        if isinstance(node, Attr):
            return self._attr(node), True
        if isinstance(node, Not):
            inner, nullable = self.compile(node.node)
            return (f"NOT coalesce({inner}, false)" if nullable else f"NOT ({inner})"), False
        parts = [self.compile(item) for item in node.items]
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(sql for sql, _ in parts) + ")", any(nullable for _, nullable in parts)

    def _attr(self, node: Attr) -> str:
        key = self.param(node.key, "text")
        if node.prefix and not node.value:
            # Present: the key with a value that is neither null nor "" (arrays and maps count).
            tests = [f"({col} -> {key}) NOT IN ('null'::jsonb, '\"\"'::jsonb)" for col in ("attributes", "resource")]
            return "(" + " OR ".join(tests) + ")"
        value = self.param(node.value, "text")
        if node.prefix:
            tests = [
                f"(starts_with({col} ->> {key}, {value})"
                f" AND jsonb_typeof({col} -> {key}) IN ('string', 'number', 'boolean'))"
                for col in ("attributes", "resource")
            ]
            return "(" + " OR ".join(tests) + ")"
        scalar = _scalar_kind(node.value)
        tests = []
        for col in ("attributes", "resource"):
            if scalar is None:
                tests.append(f"({col} ->> {key} = {value} AND jsonb_typeof({col} -> {key}) = 'string')")
            elif scalar[1] == node.value:
                tests.append(
                    f"({col} ->> {key} = {value} AND jsonb_typeof({col} -> {key}) IN ('string', '{scalar[0]}'))"
                )
            else:
                printed = self.param(scalar[1], "text")
                tests.append(
                    f"(({col} ->> {key} = {value} AND jsonb_typeof({col} -> {key}) = 'string')"
                    f" OR ({col} ->> {key} = {printed} AND jsonb_typeof({col} -> {key}) = '{scalar[0]}'))"
                )
        return "(" + " OR ".join(tests) + ")"


def _scalar_kind(value: str) -> tuple[str, str] | None:
    """When ``value`` is how JSON writes a number or boolean: its jsonb type and
    how PostgreSQL prints that value (``1e20`` → ``100000000000000000000``)."""
    if not value or value[0] not in "-0123456789tf":
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, bool):
        return ("boolean", value) if orjson.dumps(parsed).decode() == value else None
    if not isinstance(parsed, int | float) or orjson.dumps(parsed).decode() != value:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:  # pragma: no cover (orjson read it as a number)
        return None
    printed = format(number, "f")
    return "number", printed.lstrip("-") if number == 0 else printed


def compile_where(org_id: int, query: Node | None, *, low_id: int, high_id: int) -> tuple[str, list[Any]]:
    """The WHERE clause of a search or count and its ``$n`` arguments (every value a parameter)."""
    where = _Where([org_id, low_id, high_id])
    sql = "org_id = $1::bigint AND id >= $2::bigint AND id < $3::bigint"
    if query is not None:
        compiled, _ = where.compile(query)
        sql += f" AND {compiled}"
    return sql, where.args
