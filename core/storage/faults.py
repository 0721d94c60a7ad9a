"""Which database errors mean "cannot answer now" rather than "bug".

CONTRACT.md (input hygiene): database down, disk full → ``503 UNAVAILABLE``
with ``Retry-After``, never a 500. ``Database`` (core.storage.db) passes every
error raised while it connects or runs a statement through :func:`unavailable`,
the one place that decides (``Database`` methods are wrapped with
:func:`connections` and :func:`statements`):

- connecting: refused, reset, unreachable, timed out (``OSError``, which
  includes ``TimeoutError``), or any of the errors below;
- SQLite: ``SQLITE_FULL`` (database or disk is full), ``SQLITE_IOERR`` (disk
  I/O error), ``SQLITE_CANTOPEN``, ``SQLITE_READONLY`` (a filesystem remounted
  read-only), ``SQLITE_BUSY`` (another process held the lock past the busy
  timeout), ``SQLITE_NOMEM``;
- PostgreSQL: SQLSTATE class 08 (connection exception), 53 (insufficient
  resources: disk full, out of memory, too many connections), 58 (system,
  I/O error), 57P01-57P03 (shutting down, starting up); a connection
  SQLAlchemy found dead (``connection_invalidated``).

Anything else (a constraint, a syntax error, a handler's own ``OSError``
raised inside a transaction) is left alone: it stays what it is.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NoReturn, ParamSpec, TypeVar

import asyncpg
from sqlalchemy.exc import DBAPIError

from core.errors import ErrorCode, ObserveError

log = logging.getLogger("observe.storage")
P = ParamSpec("P")
T = TypeVar("T")

RETRY_AFTER = 5
_SQLITE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)
_PG_CLASSES = frozenset({"08", "53", "58"})
_PG_STATES = frozenset({"57P01", "57P02", "57P03"})
_LOG_EVERY = 10.0
_last_log = 0.0


def _is_fault(exc: BaseException, *, connecting: bool) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_CODES
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state[:2] in _PG_CLASSES or state in _PG_STATES
    return connecting and isinstance(exc, OSError)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, the driver error SQLAlchemy wrapped, and what caused them."""
    chain: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(chain) < 8:
        item = todo.pop()
        if item is None or any(item is seen for seen in chain):
            continue
        chain.append(item)
        if isinstance(item, DBAPIError) and isinstance(item.orig, BaseException):
            todo.append(item.orig)
        todo += [item.__context__, item.__cause__]
    return chain


def unavailable(exc: BaseException, *, connecting: bool = False) -> ObserveError | None:
    """The 503 for ``exc`` when it says the database cannot answer now, else
    None. ``connecting``: ``exc`` came from opening a connection, where any
    ``OSError`` is the network's or the server's."""
    if isinstance(exc, ObserveError):
        return None
    if not any(_is_fault(cause, connecting=connecting) for cause in _causes(exc)):
        return None
    global _last_log
    now = time.monotonic()
    if now - _last_log > _LOG_EVERY:
        _last_log = now
        log.error("database unavailable, answering 503: %s: %s", type(exc).__name__, exc)
    return ObserveError(
        ErrorCode.ERROR_CODE_UNAVAILABLE, "the database is unavailable; try again shortly", retry_after=RETRY_AFTER
    )


def _raise_mapped(exc: Exception, *, connecting: bool) -> NoReturn:
    err = unavailable(exc, connecting=connecting)
    if err is None:
        raise exc
    raise err from exc


def connections(
    open_connection: Callable[P, AbstractAsyncContextManager[T]],
) -> Callable[P, AbstractAsyncContextManager[T]]:
    """Wraps a method handing out a connection (``async with db.read() as
    conn``) so that its faults, opening it or using it, are UNAVAILABLE."""

    @asynccontextmanager
    @functools.wraps(open_connection)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        opened = False
        try:
            async with open_connection(*args, **kwargs) as conn:
                opened = True
                yield conn
        except Exception as exc:
            _raise_mapped(exc, connecting=not opened)

    return guarded


def statements(run: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Wraps a method that connects and runs one statement (no caller code
    inside), so that its faults are UNAVAILABLE."""

    @functools.wraps(run)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await run(*args, **kwargs)
        except Exception as exc:
            _raise_mapped(exc, connecting=True)

    return guarded


def log_round_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """How a background loop (maintenance calendar, incident engine) reports a
    round that failed: a database that cannot answer now (down, a read past
    its statement timeout) in one line, since the loop just tries again;
    anything else with its traceback, as the bug it is."""
    if isinstance(exc, ObserveError) or unavailable(exc) is not None:
        logger.warning("%s: %s", what, exc)
    else:
        logger.error("%s", what, exc_info=exc)
