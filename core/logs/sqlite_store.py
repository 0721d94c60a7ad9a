"""The embedded log store: SQLite with FTS5, one pair of tables per UTC day.

Layout: ``logs_YYYYMMDD`` holds a day's records (rowid = record id, so rows
are stored in time order and a time range is a rowid range), and
``logs_YYYYMMDD_fts`` is an external-content FTS5 index of their messages
(``columnsize=0``: no ranking is ever asked of it). Records are never updated
and days go whole, so the index is written beside the rows in the same
transaction and never needs delete bookkeeping; retention is ``DROP TABLE``.

Tokens: what is indexed is not the message but ``" ".join(message_tokens(
message))`` (``indexed_text``; an ASCII message as it is, which ``ascii``
splits the same way) with ``tokenize='ascii'``, so each token of the query
language (``core.logs.query.message_tokens``: runs of letters and digits,
``str.lower``) is exactly one FTS5 token: ``ascii`` splits only at ASCII
punctuation and space, and treats every non-ASCII code point as part of a
token. FTS5's own ``unicode61`` disagreed with Python on decomposed accents,
private-use characters, ``İ``, the final sigma and letters newer than
Unicode 6.1. The index's text thus differs from the content table's
``message`` column, which is safe only because the store never asks FTS5 for
it: no column of the FTS table is ever read (only ``rowid``, joined to the
day table), no row is ever deleted or updated through it (that would
re-tokenise the stored message), and it is never rebuilt or integrity-checked
(``'rebuild'``, ``'integrity-check'``). Anyone adding one of those must switch
to a contentless table (``content=''``) first.

Queries: the AST compiles to one SQL condition on the day table; a message
word or phrase is an FTS5 phrase (``"connection refused"``, ``"time"*``).
When the query's top level holds words (a word, a phrase, or an AND with
some), the search is driven by the index, newest rowid first, so a common
word stops at the page's last record instead of collecting every match; the
other terms filter what it yields. Without words it walks ``(org_id, id)``
backwards. Days are read newest first until the page is full. An attribute
number is compared as the JSON text orjson wrote (``0.30000000000000004``,
``-0.0``, ``1e-7``, ``18446744073709551615``), read with ``->`` at the
element's path, never through SQLite's REAL (15 significant digits); ``->``
needs SQLite 3.38 or later, which ``open`` checks.

SQLite runs on threads of its own (one writer connection, a few readers), so
a batch being indexed never stalls the event loop; Python's sqlite3 lets
other threads run while SQLite works. A search or count has a deadline
(``read_timeout_ms``, the PostgreSQL reads' statement timeout): a progress
handler aborts it past the deadline with the same 503 UNAVAILABLE, and a
caller that goes away (its task cancelled) interrupts its query, so a full
scan of many days cannot hold a reader thread for minutes.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from typing import Any, TypeVar

import orjson

from core.logs.query import And, Attr, Field, Level, Node, Not, Or, Text, message_tokens
from core.logs.records import from_micros, micros, record_of
from core.logs.store import IdCollisionError, Row, StoredRecord, day_bounds, day_of_id
from core.storage.db import read_timed_out

T = TypeVar("T")

_DAY_TABLE = re.compile(r"logs_(\d{8})")
READERS = 2
MIN_SQLITE = (3, 38)  # JSON's -> operator
DEFAULT_READ_TIMEOUT_MS = 10_000
# SQLite virtual-machine steps between two looks at a read's deadline: a
# look is a call into Python (it takes the GIL); SQLite runs some 20-30
# million steps a second, so a read is stopped within about 5 ms of it.
PROGRESS_STEPS = 100_000
_COLUMNS = (
    "id, org_id, ts, observed, severity, severity_text, message, service, trace_id, span_id,"
    " attributes, resource, scope_name, scope_version, dropped"
)
_SELECT = ", ".join("r." + c.strip() for c in _COLUMNS.split(","))
_FIELD_COLUMNS = {"service": "service", "traceId": "trace_id", "spanId": "span_id"}


def _table(day: date) -> str:
    return f"logs_{day:%Y%m%d}"


def _json(values: dict[str, Any]) -> bytes | None:
    return orjson.dumps(values) if values else None


def _row_values(row: Row, resource: bytes | None) -> tuple[Any, ...]:
    """The row of a record; ``resource`` its resource's JSON, encoded once per
    resource (the records of one OTLP ResourceLogs share it)."""
    r = row.record
    return (
        row.id,
        row.org_id,
        micros(r.timestamp),
        micros(r.observed_at),
        r.severity_number,
        r.severity_text,
        r.message,
        r.service,
        r.trace_id,
        r.span_id,
        _json(r.attributes),
        resource,
        r.scope_name,
        r.scope_version,
        r.dropped_attributes_count,
    )


def _stored(values: tuple[Any, ...]) -> StoredRecord:
    (rid, org_id, ts, observed, severity, sev_text, message, service, trace, span, attrs, res, sname, sver, dropped) = (
        values
    )
    record = record_of(
        from_micros(ts), from_micros(observed), severity, sev_text, message, service, trace, span,
        orjson.loads(attrs) if attrs else {}, orjson.loads(res) if res else {}, sname, sver, dropped,
    )  # fmt: skip
    return StoredRecord(rid, org_id, record)


def indexed_text(message: str) -> str:
    """What the FTS index is given for a message: its tokens, one space
    apart (see the module docstring). An ASCII message as it is: ``ascii``
    splits it exactly as ``message_tokens`` does (runs of ASCII letters and
    digits, lower-cased), and ``isascii`` is a flag CPython keeps on the
    string, so the common case costs no Python tokenising at all."""
    return message if message.isascii() else " ".join(message_tokens(message))


# ---------------------------------------------------------------- query compilation


def fts_phrase(node: Text) -> str:
    """The FTS5 phrase of a word or quoted phrase: tokens are letters and
    digits only, so they never need escaping inside the quotes."""
    return '"' + " ".join(node.tokens) + '"' + ("*" if node.prefix else "")


def _fts_expression(node: Node) -> str | None:
    """``node`` as one FTS5 expression, when it is words all the way down
    (AND/OR of words and phrases); None otherwise."""
    if isinstance(node, Text):
        return fts_phrase(node)
    if isinstance(node, And | Or):
        parts = [_fts_expression(item) for item in node.items]
        if any(p is None for p in parts):
            return None
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(p for p in parts if p is not None) + ")"
    return None


class _Compiler:
    """The AST as a SQL condition on the day table ``r``; every value a parameter."""

    def __init__(self, fts_table: str) -> None:
        self.fts_table = fts_table
        self.params: list[Any] = []

    def _p(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def condition(self, node: Node) -> str:
        if isinstance(node, Text):
            return (
                f"r.id IN (SELECT rowid FROM {self.fts_table} WHERE {self.fts_table} MATCH {self._p(fts_phrase(node))})"
            )
        if isinstance(node, Field):
            column = f"r.{_FIELD_COLUMNS[node.name]}"
            return _text_test(column, node.value, node.prefix, self._p)
        if isinstance(node, Attr):
            tests = []
            for column in ("r.attributes", "r.resource"):
                key = self._p(node.key)
                test = _attr_test(column, node, self._p)
                tests.append(f"EXISTS (SELECT 1 FROM json_each({column}) j WHERE j.key = {key} AND {test})")
            return f"({tests[0]} OR {tests[1]})"
        if isinstance(node, Level):
            return f"r.severity BETWEEN {self._p(node.low)} AND {self._p(node.high)}"
        if isinstance(node, Not):
            return f"NOT ({self.condition(node.node)})"
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(self.condition(item) for item in node.items) + ")"


def _text_test(column: str, value: str, prefix: bool, p: Callable[[Any], str]) -> str:
    """NULL-safe (0, never NULL, when the column is NULL): NOT must see false."""
    if prefix and not value:
        return f"({column} IS NOT NULL AND {column} != '')"
    if prefix:
        return f"({column} IS NOT NULL AND substr({column}, 1, {p(len(value))}) = {p(value)} AND {column} != '')"
    return f"({column} IS NOT NULL AND {column} = {p(value)})"


def _attr_text(column: str) -> str:
    """An attribute's value as the query compares it: JSON strings as they
    are, numbers and booleans as JSON (orjson) wrote them; arrays, maps and
    null: NULL. A number is its JSON text (``->`` at the element's path), not
    ``j.value``: that is a REAL, which SQLite prints with 15 significant
    digits (``0.30000000000000004`` as ``0.3``, ``-0.0`` as ``0.0``, ``1e-7``
    as ``1.0e-07``), and an integer past 2^63 is a REAL too. The path is
    ``$."key"`` for any key the query language can name (letters, digits,
    ``_ . - /``), so it needs no escaping."""
    return (
        f"(CASE j.type WHEN 'text' THEN j.value WHEN 'integer' THEN {column} -> j.fullkey"
        f" WHEN 'real' THEN {column} -> j.fullkey WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END)"
    )


def _attr_test(column: str, node: Attr, p: Callable[[Any], str]) -> str:
    if node.prefix and not node.value:  # attr.k:* — present, not null, not ""
        return "j.type != 'null' AND NOT (j.type = 'text' AND j.value = '')"
    return _text_test(_attr_text(column), node.value, node.prefix, p)


def _split(node: Node | None) -> tuple[str | None, list[Node]]:
    """The FTS5 expression that can drive a search, and the rest of the
    query (terms that filter what it yields)."""
    if node is None:
        return None, []
    whole = _fts_expression(node)
    if whole is not None:
        return whole, []
    if isinstance(node, And):
        words = [e for item in node.items if (e := _fts_expression(item)) is not None]
        rest = [item for item in node.items if _fts_expression(item) is None]
        if words:
            return " AND ".join(words), rest
    return None, [node]


def _compile(day: date, node: Node | None, org_id: int, low: int, high: int, select: str) -> tuple[str, list[Any], str]:
    """SQL for one day, its parameters and its ORDER BY: ``select`` is the
    column list (the record's columns, or a count)."""
    table = _table(day)
    fts = f"{table}_fts"
    words, rest = _split(node)
    compiler = _Compiler(fts)
    conditions = [compiler.condition(item) for item in rest]
    params = compiler.params
    if words is not None:
        sql = (
            f"SELECT {select} FROM {fts} CROSS JOIN {table} r ON r.id = {fts}.rowid"
            f" WHERE {fts} MATCH ? AND {fts}.rowid >= ? AND {fts}.rowid < ? AND r.org_id = ?"
        )
        head: list[Any] = [words, low, high, org_id]
        order = f" ORDER BY {fts}.rowid DESC"
    else:
        sql = f"SELECT {select} FROM {table} r WHERE r.org_id = ? AND r.id >= ? AND r.id < ?"
        head = [org_id, low, high]
        order = " ORDER BY r.id DESC"
    for condition in conditions:
        sql += f" AND {condition}"
    return sql, head + params, order


# ---------------------------------------------------------------- the store


class _ReadCall:
    """One search or count on a reader thread: its deadline, and the
    connection it runs on while it runs (for :meth:`cancel`)."""

    __slots__ = ("cancelled", "conn", "deadline", "lock")

    def __init__(self, timeout_ms: int) -> None:
        self.deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else float("inf")
        self.cancelled = False
        self.conn: sqlite3.Connection | None = None
        self.lock = threading.Lock()

    def over(self) -> bool:
        """The progress handler: true aborts the running statement."""
        return self.cancelled or time.monotonic() > self.deadline

    def cancel(self) -> None:
        """The caller went away: stop the statement now (a later one sees ``cancelled``)."""
        with self.lock:
            self.cancelled = True
            if self.conn is not None:
                self.conn.interrupt()


class SqliteLogStore:
    """See the module docstring. ``read_timeout_ms``: a search's or count's
    deadline (0: none), the PostgreSQL reads' statement timeout."""

    def __init__(self, path: str, read_timeout_ms: int = DEFAULT_READ_TIMEOUT_MS) -> None:
        self.path = path
        self.read_timeout_ms = max(0, read_timeout_ms)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="logs-sqlite-write")
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="logs-sqlite-read")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._days: set[date] = set()

    # -- threads and connections

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives the process being killed (the WAL is
            # in the OS's cache); only a power cut may lose the last ones.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA mmap_size=268435456")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs ``work`` on a reader under the read deadline: past it, 503
        UNAVAILABLE (``read_timed_out``); the awaiting task cancelled, the
        running statement is interrupted and the thread is free again."""
        call = _ReadCall(self.read_timeout_ms)

        def run() -> T:
            conn = self._connection()
            with call.lock:
                if call.cancelled:
                    raise asyncio.CancelledError
                call.conn = conn
            conn.set_progress_handler(call.over, PROGRESS_STEPS)
            try:
                return work(conn)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode == sqlite3.SQLITE_INTERRUPT and call.over():
                    raise read_timed_out() from None
                raise
            finally:
                with call.lock:
                    call.conn = None
                conn.set_progress_handler(None, 0)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._readers, run)
        except asyncio.CancelledError:
            call.cancel()
            raise

    # -- LogStore

    async def open(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise RuntimeError(
                f"the SQLite log store needs SQLite {'.'.join(map(str, MIN_SQLITE))} or later"
                f" (Python's sqlite3 has {sqlite3.sqlite_version})"
            )

        def load() -> set[date]:
            conn = self._connection()
            names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'logs_%'")
            days: set[date] = set()
            for (name,) in names:
                found = _DAY_TABLE.fullmatch(name)
                if found:
                    days.add(datetime.strptime(found.group(1), "%Y%m%d").date())
            return days

        self._days = await self._on(self._writer, load)

    async def close(self) -> None:
        def close_all() -> None:
            with self._lock:
                for conn in self._connections:
                    conn.close()
                self._connections.clear()

        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        close_all()

    def _create_day(self, conn: sqlite3.Connection, day: date) -> None:
        table = _table(day)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, org_id INTEGER NOT NULL,"
            " ts INTEGER NOT NULL, observed INTEGER NOT NULL, severity INTEGER NOT NULL,"
            " severity_text TEXT NOT NULL, message TEXT NOT NULL, service TEXT, trace_id TEXT, span_id TEXT,"
            " attributes BLOB, resource BLOB, scope_name TEXT NOT NULL, scope_version TEXT NOT NULL,"
            " dropped INTEGER NOT NULL)"
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_org ON {table} (org_id, id)")
        # service:x newest first stops at the page even for a rare service
        # (without it a rare value walks the whole day: 415 ms at 1M records).
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_service ON {table} (org_id, service, id)")
        conn.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {table}_fts USING fts5(message, content='{table}',"
            " content_rowid='id', tokenize='ascii', columnsize=0)"
        )

    async def write(self, rows: Sequence[Row]) -> None:
        def write() -> set[date]:
            by_day: dict[date, list[Row]] = {}
            for row in rows:
                by_day.setdefault(day_of_id(row.id), []).append(row)
            resources: dict[int, bytes | None] = {}

            def encoded(resource: dict[str, Any]) -> bytes | None:
                key = id(resource)  # alive while the batch is: ids are not reused meanwhile
                if key not in resources:
                    resources[key] = _json(resource)
                return resources[key]

            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for day, day_rows in by_day.items():
                    if day not in self._days:
                        self._create_day(conn, day)
                    table = _table(day)
                    conn.executemany(
                        f"INSERT INTO {table} ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [_row_values(r, encoded(r.record.resource)) for r in day_rows],
                    )
                    conn.executemany(
                        f"INSERT INTO {table}_fts (rowid, message) VALUES (?, ?)",
                        [(r.id, indexed_text(r.record.message)) for r in day_rows],
                    )
                conn.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK")
                raise IdCollisionError(str(exc)) from None
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return set(by_day)

        created = await self._on(self._writer, write)
        self._days |= created

    def _days_between(self, low: int, high: int) -> list[date]:
        """The days that exist and overlap ``[low, high)``, newest first."""
        if high <= low:
            return []
        first, last = day_of_id(max(low, 0)), day_of_id(high - 1)
        return sorted((d for d in self._days if first <= d <= last), reverse=True)

    async def search(
        self, org_id: int, query: Node | None, *, low_id: int, high_id: int, limit: int
    ) -> list[StoredRecord]:
        days = self._days_between(low_id, high_id)

        def search(conn: sqlite3.Connection) -> list[StoredRecord]:
            found: list[StoredRecord] = []
            for day in days:
                low, high = day_bounds(day)
                sql, params, order = _compile(day, query, org_id, max(low, low_id), min(high, high_id), _SELECT)
                try:
                    cursor = conn.execute(f"{sql}{order} LIMIT ?", [*params, limit - len(found)])
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):  # dropped by retention meanwhile
                        continue
                    raise
                found.extend(_stored(values) for values in cursor)
                if len(found) >= limit:
                    break
            return found

        return await self._read(search)

    async def count(
        self, org_id: int, query: Node | None, *, low_id: int, high_id: int, group_by: str = ""
    ) -> dict[str | None, int]:
        days = self._days_between(low_id, high_id)
        grouped = group_by == "service"

        def count(conn: sqlite3.Connection) -> dict[str | None, int]:
            totals: dict[str | None, int] = {}
            for day in days:
                low, high = day_bounds(day)
                select = "r.service, count(*)" if grouped else "NULL, count(*)"
                sql, params, _order = _compile(day, query, org_id, max(low, low_id), min(high, high_id), select)
                if grouped:
                    sql += " GROUP BY r.service"
                try:
                    for service, n in conn.execute(sql, params):
                        if n:
                            totals[service] = totals.get(service, 0) + n
                except sqlite3.OperationalError as exc:
                    if "no such table" not in str(exc):
                        raise
            return totals

        return await self._read(count)

    async def drop_days_before(self, day: date) -> int:
        old = sorted(d for d in self._days if d < day)

        def drop() -> int:
            conn = self._connection()
            for d in old:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(f"DROP TABLE IF EXISTS {_table(d)}_fts")
                    conn.execute(f"DROP TABLE IF EXISTS {_table(d)}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            return len(old)

        dropped = await self._on(self._writer, drop)
        self._days -= set(old)
        return dropped
