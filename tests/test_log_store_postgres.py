"""The PostgreSQL log store's own behaviour (the query language itself is
tests/test_log_search_backends.py): day partitions made on demand, also by
two writers racing for the same day; retention dropping partitions; a taken
id failing the whole batch; counts; attributes of every JSON type and
tsvector's limits against the Python matcher. Runs only with
OBSERVE_TEST_DATABASE_URL; each test uses org ids and days (long past) of
its own, so a shared database does not disturb it."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from core.logs.match import compile_matcher
from core.logs.query import parse
from core.logs.records import LogRecord, level_of
from core.logs.store import IdCollisionError, Row, day_bounds

PG_URL = os.environ.get("OBSERVE_TEST_DATABASE_URL")
pytestmark = pytest.mark.skipif(not PG_URL, reason="OBSERVE_TEST_DATABASE_URL is not set")

if PG_URL:
    from core.logs.postgres_store import PostgresLogStore, partition_name
    from core.storage.db import Database


@asynccontextmanager
async def opened() -> AsyncIterator[PostgresLogStore]:
    """A store on a database handle of its own (as another process would have)."""
    assert PG_URL is not None
    db = Database(PG_URL)
    store = PostgresLogStore(db)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        await db.close()


def a_record(message: str, at: datetime, **extra: Any) -> LogRecord:
    severity = extra.pop("severity", 9)
    return LogRecord(
        timestamp=at,
        observed_at=at,
        severity_number=severity,
        severity_text="",
        level=level_of(severity),
        message=message,
        service=extra.pop("service", None),
        trace_id=None,
        span_id=None,
        attributes=extra.pop("attributes", {}),
        resource=extra.pop("resource", {}),
    )


def row_on(day: date, seq: int, org: int, record: LogRecord | None = None) -> Row:
    low, _ = day_bounds(day)
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    return Row(low + (12 * 3600 * 1000 << 20) + seq, org, record or a_record(f"message {seq}", noon))


async def partitions(store: PostgresLogStore) -> set[str]:
    return set((await store._partitions()).values())


def an_org() -> int:
    return random.randrange(4 * 10**9, 5 * 10**9)


def test_partitions_are_made_on_demand_and_dropped_by_day() -> None:
    async def run() -> None:
        org = an_org()
        first = date(1972, 1, 1) + timedelta(days=random.randrange(2000))
        days = [first + timedelta(days=n) for n in range(3)]
        async with opened() as one, opened() as two:
            # Two writers (two database handles) racing to create the same new days.
            results = await asyncio.gather(
                *(store.write([row_on(day, seq, org) for day in days]) for seq, store in enumerate((one, two)))
            )
            assert results == [None, None]
            assert {partition_name(day) for day in days} <= await partitions(one)
            low, high = day_bounds(days[0])[0], day_bounds(days[-1])[1]
            assert (await one.count(org, None, low_id=low, high_id=high)) == {None: 6}

            # Retention drops whole days before the given one, and only those.
            assert await one.drop_days_before(days[2]) >= 2
            left = await partitions(one)
            assert partition_name(days[2]) in left
            assert not {partition_name(days[0]), partition_name(days[1])} & left
            assert (await one.count(org, None, low_id=low, high_id=high)) == {None: 2}

            # The other handle still believes day 0 exists: its write re-creates it.
            await two.write([row_on(days[0], 7, org)])
            assert partition_name(days[0]) in await partitions(one)
            assert (await one.count(org, None, low_id=low, high_id=high)) == {None: 3}
            await one.drop_days_before(days[2] + timedelta(days=1))

    asyncio.run(run())


def test_a_taken_id_fails_the_whole_batch_and_counts_group_by_service() -> None:
    async def run() -> None:
        org = an_org()
        now = datetime.now(UTC)
        day = now.date()
        async with opened() as store:
            taken = row_on(day, random.getrandbits(20), org, a_record("first", now, service="api"))
            await store.write([taken])
            fresh = Row(taken.id + 1 if taken.id & 1 == 0 else taken.id - 1, org, a_record("second", now))
            with pytest.raises(IdCollisionError):
                await store.write([fresh, taken])
            low, high = day_bounds(day)
            assert [r.record.message for r in await store.search(org, None, low_id=low, high_id=high, limit=10)] == [
                "first"
            ]
            # The same id in another org is another record.
            await store.write([Row(taken.id, org + 1, taken.record)])

            more = [Row(fresh.id, org, a_record("second", now)), row_on(day, 5, org, a_record("third", now))]
            await store.write(more)
            assert await store.count(org, None, low_id=low, high_id=high, group_by="service") == {"api": 1, None: 2}
            assert await store.count(org, parse("second OR first"), low_id=low, high_id=high, group_by="service") == {
                "api": 1,
                None: 1,
            }
            assert await store.count(org, parse("nothing"), low_id=low, high_id=high, group_by="service") == {}
            assert await store.count(org, parse("nothing"), low_id=low, high_id=high) == {None: 0}
            with pytest.raises(ValueError, match="group"):
                await store.count(org, None, low_id=low, high_id=high, group_by="level")

    asyncio.run(run())


# Attribute values of every JSON type, and where jsonb prints numbers differently from JSON.
ATTRIBUTES: dict[str, dict[str, Any]] = {
    "str": {"v": "500", "s": "héllo wörld", "e": ""},
    "int": {"v": 500, "big": 2**63 - 1, "neg": -7},
    "float": {"v": 1.5, "tiny": 1e-7, "huge": 1e20, "whole": 2.0, "zero": -0.0},
    "bool": {"v": True, "f": False},
    "null": {"v": None},
    "list": {"v": [500, "500"], "empty": []},
    "map": {"v": {"x": 500}, "empty": {}},
}
ATTRIBUTE_QUERIES = [
    "attr.v:500",
    'attr.v:"500"',
    "attr.v:5*",
    "attr.v:*",
    "-attr.v:*",
    "-attr.v:500",
    "attr.v:1.5",
    "attr.v:1.50",
    "attr.v:true",
    "attr.v:tr*",
    "attr.v:null",
    'attr.v:"[500,\\"500\\"]"',
    'attr.v:"{\\"x\\":500}"',
    "attr.s:héllo*",
    'attr.s:"héllo wörld"',
    "attr.e:*",
    "-attr.e:*",
    "attr.empty:*",
    "attr.big:9223372036854775807",
    "attr.big:922*",
    "attr.neg:-7",
    "attr.tiny:1e-7",
    "attr.tiny:0.0000001",
    "attr.huge:1e20",
    "attr.huge:100000000000000000000",
    "attr.whole:2.0",
    "attr.whole:2",
    "attr.zero:-0.0",
    "attr.f:false",
    "attr.f:*",
    "attr.missing:*",
    "-attr.missing:x",
    "attr.V:500",
]


def test_attributes_of_every_json_type_and_tsvector_limits_agree_with_the_matcher() -> None:
    async def run() -> None:
        org = an_org()
        now = datetime.now(UTC).replace(microsecond=0)
        data: dict[str, LogRecord] = {
            name: a_record(f"record {name}", now - timedelta(seconds=n), attributes=attrs)
            for n, (name, attrs) in enumerate(ATTRIBUTES.items())
        }
        # Resource attributes count too.
        data["resource"] = a_record("record resource", now, resource={"v": 500})
        # tsvector's limits: a token past 2,047 bytes, one past position 16,383, one repeated 300 times
        # (a phrase past the 16,383rd token or the 256th repeat is not found: the module's docstring).
        long_token = "é" * 1500
        data["long"] = a_record(f"x {long_token} y", now)
        data["far"] = a_record(" ".join(["filler"] * 17000) + " faraway end", now)
        data["many"] = a_record(" ".join(["again"] * 300) + " last", now)
        text_queries = [
            long_token,
            f'"x {long_token} y"',
            long_token[:-1],
            long_token[:-1] + "*",
            "faraway",
            "farawa*",
            "filler",
            '"filler filler"',
            "again",
            '"again again"',
            "last",
        ]
        rows = [Row(day_bounds(now.date())[0] + n, org, r) for n, r in enumerate(data.values())]
        names = {row.id: name for row, name in zip(rows, data, strict=True)}
        async with opened() as store:
            await store.write(rows)
            low, high = day_bounds(now.date())
            wrong = []
            for q in ATTRIBUTE_QUERIES + text_queries:
                matcher = compile_matcher(parse(q))
                expected = sorted(name for name, r in data.items() if matcher(r))
                found = await store.search(org, parse(q), low_id=low, high_id=high, limit=100)
                got = sorted(names[f.id] for f in found)
                if got != expected:
                    wrong.append(f"{q[:40]!r}: expected {expected}, got {got}")
            assert not wrong, "\n".join(wrong)

            # What comes back is what went in, value for value.
            found = await store.search(org, None, low_id=low, high_id=high, limit=100)
            back = {names[f.id]: f.record for f in found}
            for name, record in data.items():
                assert back[name] == record, name
                assert [type(v) for v in back[name].attributes.values()] == [
                    type(v) for v in record.attributes.values()
                ], name

    asyncio.run(run())
