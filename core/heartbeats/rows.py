"""The ping batch's statements, run on the driver connection of the batch's
transaction (sqlite3 inline, or asyncpg) rather than through SQLAlchemy's
execution layer.

Measured with bench/heartbeats.py: SQLAlchemy's async execution costs about
0.3 ms a statement here, and a batch runs five; with 64 clients a batch holds
a few dozen pings, so that overhead was half of the server's CPU per ping.
The SQL is written once per dialect below; the schema is the tables'
(core.heartbeats.tables), checked by the tests that run every ping through
the server. Datetimes on SQLite are written as SQLAlchemy writes them
(``YYYY-MM-DD HH:MM:SS.ffffff``, UTC), so every other reader sees the same
values.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

_COLUMNS = (
    "m.id, m.org_id, m.type, m.interval_sec, m.paused, m.settings, m.heartbeat_token_hash, s.status,"
    " h.monitor_id, h.last_ping_at, h.last_success_at, h.counts_from, h.open_starts, h.deadline_at,"
    " h.deadline_reason"
)
_FROM = (
    " FROM monitors m JOIN monitor_state s ON s.monitor_id = m.id"
    " LEFT JOIN heartbeat_state h ON h.monitor_id = m.id WHERE "
)
_PING_COLUMNS = "monitor_id, at, kind, exit_status, runtime_ms, rid, ip, user_agent, body_bytes, body"
_STATE_COLUMNS = ("last_ping_at", "last_success_at", "counts_from", "open_starts", "deadline_at", "deadline_reason")
_UPSERT = (
    f"INSERT INTO heartbeat_state (monitor_id, org_id, {', '.join(_STATE_COLUMNS)}) VALUES ({{marks}})"
    f" ON CONFLICT (monitor_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _STATE_COLUMNS)}"
)


def _marks(n: int, dollar: bool) -> str:
    return ", ".join(f"${i}" for i in range(1, n + 1)) if dollar else ", ".join("?" * n)


def _sqlite_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.isoformat(sep=" ", timespec="microseconds")[:26]  # without the "+00:00"


def _from_sqlite_time(value: Any) -> datetime | None:
    """A DATETIME column as SQLite hands it back (text), as SQLAlchemy reads it."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


class Row(NamedTuple):
    """A monitor with its state, as :meth:`Driver.load` reads it."""

    id: int
    org_id: int
    type: str
    interval_sec: int
    paused: bool
    settings: str
    heartbeat_token_hash: str
    status: str | None
    has_state: int | None  # heartbeat_state.monitor_id: null without a row
    last_ping_at: datetime | None
    last_success_at: datetime | None
    counts_from: datetime | None
    open_starts: str | None
    deadline_at: datetime | None
    deadline_reason: str | None


def _sqlite_row(values: Sequence[Any]) -> Row:
    row = Row(*values)
    t = _from_sqlite_time
    return row._replace(
        last_ping_at=t(row.last_ping_at),
        last_success_at=t(row.last_success_at),
        counts_from=t(row.counts_from),
        deadline_at=t(row.deadline_at),
    )


class Driver:
    """The driver connection under one SQLAlchemy transaction."""

    def __init__(self, raw: Any, sqlite: bool) -> None:
        self.raw = raw
        self.sqlite = sqlite

    @classmethod
    async def of(cls, conn: AsyncConnection) -> Driver:
        fairy = await conn.get_raw_connection()
        driver = fairy.driver_connection
        assert driver is not None
        if conn.dialect.name == "sqlite":
            # The sqlite3 connection under aiosqlite's API; Database.write()
            # has issued BEGIN IMMEDIATE on it already.
            return cls(driver._connection, True)
        # SQLAlchemy's asyncpg adapter opens its transaction at the first
        # statement it runs: run one, or ours would run (and lock) outside it.
        await conn.exec_driver_sql("SELECT 1")
        return cls(driver, False)

    async def load(self, *, hashes: Sequence[str] = (), ids: Sequence[int] = ()) -> list[Row]:
        """Monitors by token hash or id (of any type: the caller tells a token
        of another type from one that is no one's), with their state, in id
        order. On PostgreSQL the monitors rows are locked first (in id order),
        and the state is read by a second statement (see core.heartbeats.state)."""
        column, keys = ("m.heartbeat_token_hash", list(hashes)) if hashes else ("m.id", list(ids))
        if not keys:
            return []
        if self.sqlite:
            raw: sqlite3.Connection = self.raw
            sql = f"SELECT {_COLUMNS}{_FROM}{column} IN ({_marks(len(keys), False)}) ORDER BY m.id"
            return [_sqlite_row(values) for values in raw.execute(sql, keys).fetchall()]
        kind = "text" if hashes else "bigint"
        locked = await self.raw.fetch(
            f"SELECT m.id FROM monitors m WHERE {column} = ANY($1::{kind}[]) ORDER BY m.id FOR NO KEY UPDATE",
            keys,
        )
        if not locked:
            return []
        rows = await self.raw.fetch(
            f"SELECT {_COLUMNS}{_FROM}m.id = ANY($1::bigint[]) ORDER BY m.id", [r[0] for r in locked]
        )
        return [Row(*values) for values in rows]

    async def insert_pings(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows in ``monitor_id, at, kind, exit_status, runtime_ms, rid, ip,
        user_agent, body_bytes, body`` order."""
        if not rows:
            return
        sql = f"INSERT INTO heartbeat_pings ({_PING_COLUMNS}) VALUES ({_marks(10, not self.sqlite)})"
        if self.sqlite:
            self.raw.executemany(sql, [(r[0], _sqlite_time(r[1]), *r[2:]) for r in rows])
        else:
            await self.raw.executemany(sql, rows)

    async def save_states(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows in ``monitor_id, org_id, last_ping_at, last_success_at,
        counts_from, open_starts, deadline_at, deadline_reason`` order."""
        if not rows:
            return
        sql = _UPSERT.format(marks=_marks(8, not self.sqlite))
        if self.sqlite:
            t = _sqlite_time
            self.raw.executemany(sql, [(r[0], r[1], t(r[2]), t(r[3]), t(r[4]), r[5], t(r[6]), r[7]) for r in rows])
        else:
            await self.raw.executemany(sql, rows)
