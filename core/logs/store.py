"""The log store: one small interface between ingest/search and an engine.

Two engines implement it: SQLite FTS5 (``core.logs.sqlite_store``, the
embedded default, in its own database file beside the main one) and
PostgreSQL (``core.logs.postgres_store``, daily partitions of one table in
the main database). Another engine (one built for volume beyond a machine)
is one more module with these five methods; ingest, search, tail and log
alerts never look past them.

Record ids: a record's id is ``(ms << 20) | seq`` where ``ms`` is its time in
milliseconds since the epoch (ingest refuses times outside ``IdSource.window``:
older than retention or more than a day ahead) and ``seq`` 20 bits from a
per-process counter that starts at a random value and never wraps inside a
batch (a request holds at most 100,000 records). Ids therefore sort by time, a time range is an id range
(partition pruning and newest-first scans both come from the primary key),
and a cursor is the last id. Two records only collide when they carry the
same millisecond and ``seq`` values 2^20 apart in one process's counter (or
equal across processes); the store reports it (``IdCollisionError``) and the
writer retries that batch with fresh ids.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from core.logs.query import Node
from core.logs.records import LogRecord, Window

SEQ_BITS = 20
SEQ_MASK = (1 << SEQ_BITS) - 1
FUTURE_SLACK = timedelta(days=1)  # records stamped further ahead are filed at now + this


class IdCollisionError(Exception):
    """A batch's id is taken already; nothing of the batch was written."""


@dataclass(frozen=True, slots=True)
class Row:
    """A record as the writer hands it to a store."""

    id: int
    org_id: int
    record: LogRecord


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as a store returns it."""

    id: int
    org_id: int
    record: LogRecord


def ms_of(moment: datetime) -> int:
    return int(moment.timestamp() * 1000) if moment.tzinfo else int(moment.replace(tzinfo=UTC).timestamp() * 1000)


def id_floor(moment: datetime) -> int:
    """The smallest id of a record filed at ``moment``'s millisecond."""
    return ms_of(moment) << SEQ_BITS


def id_ceiling(moment: datetime) -> int:
    """One past the largest id of a record filed at ``moment``'s millisecond (an exclusive bound)."""
    return (ms_of(moment) + 1) << SEQ_BITS


def ms_of_id(record_id: int) -> int:
    return record_id >> SEQ_BITS


def day_of_id(record_id: int) -> date:
    """The UTC day a record is filed under (its partition)."""
    return datetime.fromtimestamp((record_id >> SEQ_BITS) / 1000, UTC).date()


def day_bounds(day: date) -> tuple[int, int]:
    """The id range ``[low, high)`` of one UTC day."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return id_floor(start), id_floor(start + timedelta(days=1))


class IdSource:
    """Hands out record ids (see the module's docstring)."""

    def __init__(self, retention_days: int) -> None:
        self.retention_days = retention_days
        self._seq = random.getrandbits(SEQ_BITS)

    def window(self, now: datetime) -> Window:
        """The times records may carry: the retention window's first UTC day
        to ``now + FUTURE_SLACK`` (ingest refuses others, one by one)."""
        first_day = (now - timedelta(days=self.retention_days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return Window(first_day, now + FUTURE_SLACK)

    def assign(self, records: Sequence[tuple[int, LogRecord]], now: datetime) -> list[Row]:
        """Ids for ``(org_id, record)`` pairs, in order."""
        window = self.window(now)  # ingest refused what lies outside; the clamp only guards the id's range
        low, high = ms_of(window.first), ms_of(window.last)
        rows: list[Row] = []
        seq = self._seq
        if seq + len(records) > SEQ_MASK:
            # No wrap inside a batch: a request's records of one millisecond keep their order.
            seq = 0
        for org_id, record in records:
            seq = (seq + 1) & SEQ_MASK
            ms = min(max(int(record.timestamp.timestamp() * 1000), low), high)
            rows.append(Row((ms << SEQ_BITS) | seq, org_id, record))
        self._seq = seq
        return rows

    def skip(self) -> None:
        """Moves the counter somewhere else (after an ``IdCollisionError``)."""
        self._seq = random.getrandbits(SEQ_BITS)


class LogStore(Protocol):
    """What ingest, search, tail and log alerts need of an engine."""

    async def open(self) -> None:
        """Creates what is missing (tables, today's partition); idempotent."""

    async def close(self) -> None: ...

    async def write(self, rows: Sequence[Row]) -> None:
        """Commits every row in one transaction, or none (then raises:
        ``IdCollisionError`` for a taken id, anything else for a failure).
        Partitions the rows need are created first."""

    async def search(
        self, org_id: int, query: Node | None, *, low_id: int, high_id: int, limit: int
    ) -> list[StoredRecord]:
        """Up to ``limit`` records of the org matching ``query`` with
        ``low_id <= id < high_id``, highest id (newest) first."""

    async def count(
        self, org_id: int, query: Node | None, *, low_id: int, high_id: int, group_by: str = ""
    ) -> dict[str | None, int]:
        """Matching records with ``low_id <= id < high_id``: ``{None: n}``, or
        per service with ``group_by="service"`` (records without one under
        None); groups with no match are absent."""

    async def drop_days_before(self, day: date) -> int:
        """Drops whole days (partitions, day tables) before ``day``; returns
        how many were dropped."""
