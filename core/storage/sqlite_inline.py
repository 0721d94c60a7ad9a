"""SQLite for asyncio without a thread hop per call.

aiosqlite runs every sqlite3 call on a worker thread; on a small machine the
hop (~0.2 ms, several per statement) costs a hundred times what SQLite itself
spends on an indexed read (~2 µs). This connection keeps aiosqlite's API, so
SQLAlchemy's aiosqlite dialect drives it unchanged, but runs each call inline
on the event loop's thread.

What keeps that safe: in WAL mode readers never wait for the lock; writers
are serialised in-process by ``Database.write()`` before ``BEGIN IMMEDIATE``,
so the only wait left is on another process's write transaction, bounded by
``busy_timeout``. Heavy scans belong in a worker thread, not here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import aiosqlite


class _RunNow:
    """Stands in for aiosqlite's queue to its worker thread: runs each
    ``(future, function)`` at once and settles the future, so every path
    into the connection (SQLAlchemy's adapter queues some calls itself) is
    inline."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """An ``aiosqlite.Connection`` that executes on the calling thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)
        self._tx = _RunNow()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()  # no worker thread to start


def inline_creator(path: str, *, busy_timeout: float) -> Callable[[], Awaitable[aiosqlite.Connection]]:
    """The ``async_creator`` for ``create_async_engine`` on the file ``path``."""

    def connector() -> sqlite3.Connection:
        # check_same_thread off: the pool may finalise a connection from the GC's thread.
        return sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)

    async def create() -> aiosqlite.Connection:
        return await InlineConnection(connector, iter_chunk_size=64)

    return create
