"""Hot-path reads compiled once and run straight on the driver.

SQLAlchemy's async execution costs about 0.3 ms per statement on a small
machine, far more than SQLite's few microseconds for an indexed lookup. A
:class:`Query` keeps the statement and its SQL compiled once per dialect
with the bind and result processors of its column types; it runs on a
dedicated sqlite3 reader or an asyncpg pool, and rows come back typed
exactly as SQLAlchemy would return them.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import Select
from sqlalchemy.engine import Dialect


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    defaults: dict[str, Any]
    binds: dict[str, Callable[[Any], Any] | None]
    results: tuple[Callable[[Any], Any] | None, ...]
    record: type


class Query:
    """A read statement with its per-dialect compiled form cached."""

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is not None:
            return found
        compiled = self.stmt.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        entries = compiled._result_columns
        result = _Compiled(
            sql=str(compiled),
            names=names,
            defaults=dict(compiled.params),
            binds={n: compiled.binds[n].type._cached_bind_processor(dialect) for n in names},
            results=tuple(e.type._cached_result_processor(dialect, None) for e in entries),
            record=namedtuple("Record", [e.keyname for e in entries], rename=True),
        )
        self._compiled[dialect.name] = result
        return result


def bind_args(compiled: _Compiled, params: dict[str, Any]) -> list[Any]:
    """Positional driver arguments for ``params``, through the bind processors."""
    values = {**compiled.defaults, **params}
    args = []
    for name in compiled.names:
        value = values[name]
        process = compiled.binds[name]
        args.append(process(value) if process is not None else value)
    return args


def record(compiled: _Compiled, row: Sequence[Any]) -> Any:
    """A driver row as SQLAlchemy would return it (result processors applied)."""
    return compiled.record(*(p(v) if p is not None else v for p, v in zip(compiled.results, row, strict=True)))


def run_sqlite(conn: sqlite3.Connection, compiled: _Compiled, params: dict[str, Any]) -> Any | None:
    """The first row of ``compiled`` with ``params``, typed; None if none."""
    row = conn.execute(compiled.sql, bind_args(compiled, params)).fetchone()
    return None if row is None else record(compiled, row)


async def run_asyncpg(pool: asyncpg.Pool, compiled: _Compiled, params: dict[str, Any]) -> Any | None:
    """The same on PostgreSQL, through an asyncpg pool (prepared and cached)."""
    row = await pool.fetchrow(compiled.sql, *bind_args(compiled, params))
    return None if row is None else record(compiled, tuple(row))
