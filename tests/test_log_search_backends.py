"""Every query-language feature against every engine, from one table
(tests/logs_cases.py): the Python matcher of the live tail, SQLite FTS5 and
PostgreSQL (when OBSERVE_TEST_DATABASE_URL is set). Each engine answers the
whole table in one run, and a failure lists every case it got wrong."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.logs.match import compile_matcher
from core.logs.query import QueryError, parse
from core.logs.store import IdSource, LogStore, Row, id_ceiling, id_floor
from tests.logs_cases import ALL, BAD_QUERIES, CASES, COUNT_BY_SERVICE, OTHER_ORG_MESSAGE, record, records

PG_URL = os.environ.get("OBSERVE_TEST_DATABASE_URL")
BACKENDS = [
    "python",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.skipif(not PG_URL, reason="OBSERVE_TEST_DATABASE_URL is not set")),
]


@asynccontextmanager
async def open_store(backend: str, tmp_path: Path) -> AsyncIterator[LogStore]:
    if backend == "sqlite":
        from core.logs.sqlite_store import SqliteLogStore

        store: LogStore = SqliteLogStore(str(tmp_path / "logs.db"))
        db = None
    else:
        from core.logs.postgres_store import PostgresLogStore
        from core.storage.db import Database

        assert PG_URL is not None
        db = Database(PG_URL)
        store = PostgresLogStore(db)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        if db is not None:
            await db.close()


def test_query_errors_name_the_position() -> None:
    for q, position in BAD_QUERIES:
        with pytest.raises(QueryError) as caught:
            parse(q)
        assert caught.value.position == position, q
        assert str(caught.value).endswith(f"at position {position}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_case_on_every_engine(backend: str, tmp_path: Path) -> None:
    data = records()
    by_id: dict[str, str] = {}
    if backend == "python":
        wrong = []
        for q, expected in CASES:
            matcher = compile_matcher(parse(q))
            got = "".join(name for name, r in data.items() if matcher(r))
            if got != expected:
                wrong.append(f"{q!r}: expected {expected!r}, got {got!r}")
        assert not wrong, "\n".join(wrong)
        return

    async def run() -> None:
        # Org ids of their own: a shared PostgreSQL database may hold other tests' logs.
        org, other = random.randrange(10**9, 2 * 10**9), random.randrange(2 * 10**9, 3 * 10**9)
        now = datetime.now(UTC)
        ids = IdSource(retention_days=14)
        async with open_store(backend, tmp_path) as store:
            rows: list[Row] = ids.assign([(org, r) for r in data.values()], now)
            by_id.update({str(row.id): name for row, name in zip(rows, data, strict=True)})
            stranger = record(*OTHER_ORG_MESSAGE, at=now - timedelta(minutes=5))
            rows += ids.assign([(other, stranger)], now)
            await store.write(rows)
            low, high = id_floor(now - timedelta(hours=1)), id_ceiling(now)
            wrong: list[str] = []
            for q, expected in CASES:
                found = await store.search(org, parse(q), low_id=low, high_id=high, limit=100)
                names = [by_id.get(str(f.id), "?") for f in found]
                if "".join(sorted(names)) != expected:
                    wrong.append(f"{q!r}: expected {expected!r}, got {''.join(sorted(names))!r}")
                elif names != sorted(names, reverse=True):  # the dataset's names are in time order
                    wrong.append(f"{q!r}: not newest first: {names}")
            assert not wrong, f"{backend}:\n" + "\n".join(wrong)

            # What comes back is what went in.
            found = await store.search(org, parse("service:api level:error"), low_id=low, high_id=high, limit=10)
            assert [f.record for f in found] == [data["a"]]
            assert found[0].org_id == org

            # Counts, grouped and not.
            assert await store.count(org, None, low_id=low, high_id=high) == {None: len(ALL)}
            assert await store.count(org, None, low_id=low, high_id=high, group_by="service") == COUNT_BY_SERVICE
            assert await store.count(org, parse("refused"), low_id=low, high_id=high) == {None: 2}
            assert await store.count(org, parse("nothing-matches"), low_id=low, high_id=high) in ({}, {None: 0})

            # Paging: the id bounds page through newest first, and the time range prunes.
            first = await store.search(org, None, low_id=low, high_id=high, limit=4)
            rest = await store.search(org, None, low_id=low, high_id=first[-1].id, limit=100)
            assert [by_id[str(r.id)] for r in first + rest] == list(reversed(ALL))
            middle = data["e"].timestamp
            older = await store.search(org, None, low_id=low, high_id=id_ceiling(middle), limit=100)
            assert "".join(sorted(by_id[str(r.id)] for r in older)) == "abcde"
            newer = await store.search(org, None, low_id=id_floor(middle), high_id=high, limit=100)
            assert "".join(sorted(by_id[str(r.id)] for r in newer)) == ALL[ALL.index("e") :]

            # The other org sees only its own record.
            theirs = await store.search(other, parse("refused"), low_id=low, high_id=high, limit=100)
            assert [r.record.message for r in theirs] == [OTHER_ORG_MESSAGE[0]]

    asyncio.run(run())


def test_a_slow_sqlite_read_ends_at_its_deadline_or_when_its_caller_leaves(tmp_path: Path) -> None:
    """A search or count past ``read_timeout_ms`` is 503 UNAVAILABLE (as a
    PostgreSQL read past its statement timeout), and one whose caller is
    cancelled stops: both reader threads are free again at once. The slow
    query: 100 attribute terms, each a walk of 20 keys, on 8,000 records
    (about 2 s to the end on a quiet machine)."""
    from core.errors import ErrorCode, ObserveError
    from core.logs.sqlite_store import READERS, SqliteLogStore

    slow = parse(" OR ".join(f"attr.k{n}:v" for n in range(100)))
    path = str(tmp_path / "logs.db")

    async def run() -> None:
        now = datetime.now(UTC)
        attributes = {f"key{k}": f"value {k}" for k in range(20)}
        rows = IdSource(retention_days=14).assign(
            [(1, record(f"m {n}", "api", 9, now, attributes=attributes)) for n in range(8000)], now
        )
        low, high = id_floor(now - timedelta(hours=1)), id_ceiling(now)
        timed = SqliteLogStore(path, read_timeout_ms=100)
        patient = SqliteLogStore(path, read_timeout_ms=0)
        await timed.open()
        try:
            await timed.write(rows)
            await patient.open()  # it learns the days there are
            started = asyncio.get_running_loop().time()
            with pytest.raises(ObserveError) as caught:
                await timed.count(1, slow, low_id=low, high_id=high)
            assert caught.value.code == ErrorCode.ERROR_CODE_UNAVAILABLE
            assert caught.value.retry_after == 1
            assert asyncio.get_running_loop().time() - started < 1.0
            # A quick read is not affected by the deadline.
            assert len(await timed.search(1, None, low_id=low, high_id=high, limit=5)) == 5

            # Every reader busy with the slow query, then the callers leave.
            calls = [asyncio.create_task(patient.count(1, slow, low_id=low, high_id=high)) for _ in range(READERS)]
            await asyncio.sleep(0.1)
            for call in calls:
                call.cancel()
            started = asyncio.get_running_loop().time()
            assert len(await patient.search(1, None, low_id=low, high_id=high, limit=5)) == 5
            assert asyncio.get_running_loop().time() - started < 0.5
            assert all(call.cancelled() for call in calls)
        finally:
            await timed.close()
            await patient.close()

    asyncio.run(run())
