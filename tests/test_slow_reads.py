"""Reads that cannot run away: the tag filter is one index scan, API reads on
PostgreSQL have a statement timeout (503 UNAVAILABLE), and a read whose
client left is cancelled with its query (REST and gRPC)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from observe.v1 import monitors_pb2, monitors_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from core.monitors.store import tagged
from tests.conftest import PG_URL, Persona, Server, register, start_server, stop_server
from tests.test_grpc import _auth
from tests.test_monitors import create

COVERING_INDEX = "ix_monitor_tags_org_id_tag_monitor_id"
STATEMENT_TIMEOUT_MS = 3000


def test_the_tag_filter_holds_every_tag_once(owner: Persona) -> None:
    tags = [f"t{i}" for i in range(20)]
    with owner.client() as c:
        full = create(c, tags=tags)
        create(c, tags=tags[:19])
        r = c.get("/api/v1/monitors", params=[("tag", t) for t in tags])
        repeated = c.get("/api/v1/monitors", params=[("tag", "t0"), ("tag", "t0"), ("tag", "t19")])
        too_many = c.get("/api/v1/monitors", params=[("tag", f"x{i}") for i in range(21)])
    assert [m["id"] for m in r.json()["monitors"]] == [full["id"]]
    assert [m["id"] for m in repeated.json()["monitors"]] == [full["id"]]
    assert (too_many.status_code, too_many.json()["fields"][0]["path"]) == (400, "tag")


def test_the_tag_filter_reads_the_covering_index(server: Server, owner: Persona) -> None:
    query = tagged(owner.org_id, [f"t{i}" for i in range(20)])

    async def plan() -> str:
        engine = create_async_engine(server.database_url)
        try:
            async with engine.connect() as conn:
                sql = str(query.compile(engine.sync_engine, compile_kwargs={"literal_binds": True}))
                if server.backend == "sqlite":
                    rows = await conn.execute(text("EXPLAIN QUERY PLAN " + sql))
                    return "\n".join(str(r[-1]) for r in rows)
                # A small test table is read whole: ask what the planner does without that choice.
                await conn.execute(text("SET LOCAL enable_seqscan = off"))
                await conn.execute(text("SET LOCAL enable_bitmapscan = off"))
                return "\n".join(r[0] for r in await conn.execute(text("EXPLAIN " + sql)))
        finally:
            await engine.dispose()

    found = asyncio.run(plan())
    assert COVERING_INDEX in found, found
    assert ("COVERING INDEX" in found) if server.backend == "sqlite" else ("Index Only Scan" in found), found


class TableLock:
    """Holds ACCESS EXCLUSIVE on a table from another PostgreSQL session, so
    a read of it waits: a slow query on demand."""

    def __init__(self, table: str) -> None:
        self.table = table
        self._held, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        engine = create_async_engine(PG_URL or "")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE"))
                self._held.set()
                await asyncio.to_thread(self._release.wait)
                await conn.rollback()
        finally:
            await engine.dispose()

    def __enter__(self) -> TableLock:
        self._thread.start()
        assert self._held.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._thread.join(10)


def waiting_reads(table: str) -> int:
    """ListMonitors' tag queries of ``table`` waiting on a lock, in any session (not the background
    reads every server makes, such as the maintenance calendar's, which wait for the same lock)."""

    async def count() -> int:
        engine = create_async_engine(PG_URL or "")
        try:
            async with engine.connect() as conn:
                sql = text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE :pattern AND pid <> pg_backend_pid()"
                )
                return int((await conn.execute(sql, {"pattern": f"%FROM {table}%GROUP BY%"})).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(count())


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def pg_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not PG_URL:
        pytest.skip("needs OBSERVE_TEST_DATABASE_URL (PostgreSQL)")
    srv = start_server(
        Path(tmp_path_factory.mktemp("slow-reads")),
        backend="postgresql",
        extra_env={
            "OBSERVE_DB_STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
            "OBSERVE_ALLOW_PRIVATE_TARGETS": "true",
        },
    )
    yield srv
    stop_server(srv)


def test_a_read_past_the_statement_timeout_is_503_unavailable(pg_api: Server) -> None:
    persona = register(pg_api)
    with TableLock("monitor_tags"), persona.client() as c:
        started = time.monotonic()
        r = c.get("/api/v1/monitors", params={"tag": "slow"})
        took = time.monotonic() - started
        with grpc.insecure_channel(pg_api.grpc_target) as channel, pytest.raises(grpc.RpcError) as caught:
            monitors_pb2_grpc.MonitorServiceStub(channel).ListMonitors(
                monitors_pb2.ListMonitorsRequest(tag=["slow"]), metadata=_auth(persona.pat), timeout=30
            )
    assert (r.status_code, r.json()["code"]) == (503, "UNAVAILABLE"), r.text
    assert r.headers["retry-after"] == "1"
    assert STATEMENT_TIMEOUT_MS / 1000 <= took < STATEMENT_TIMEOUT_MS / 1000 + 5
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Traceback" not in pg_api.log()


def test_writes_have_no_statement_timeout(pg_api: Server) -> None:
    persona = register(pg_api)
    with persona.client() as c:
        lock = TableLock("monitor_tags")
        with lock:
            slow = threading.Timer(STATEMENT_TIMEOUT_MS / 1000 + 1, lock.__exit__)
            slow.start()  # lets go after the read timeout has passed
            r = c.post("/api/v1/monitors", json={"name": "m", "type": "http", "url": "http://127.0.0.1:9/",
                                                 "tags": ["waited"]})  # fmt: skip
            slow.join()
    assert r.status_code == 201, r.text


def test_a_rest_read_is_cancelled_with_its_query_when_the_client_leaves(pg_api: Server) -> None:
    persona = register(pg_api)
    with TableLock("monitor_tags"):
        with persona.client() as c, pytest.raises(httpx.ReadTimeout):
            c.get("/api/v1/monitors", params={"tag": "gone"}, timeout=0.5)
        # Gone well before the statement timeout would have ended it.
        assert wait_until(lambda: waiting_reads("monitor_tags") == 0, STATEMENT_TIMEOUT_MS / 1000 - 1)


def test_a_grpc_read_is_cancelled_with_its_query_when_the_deadline_passes(pg_api: Server) -> None:
    persona = register(pg_api)
    with TableLock("monitor_tags"), grpc.insecure_channel(pg_api.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            monitors_pb2_grpc.MonitorServiceStub(channel).ListMonitors(
                monitors_pb2.ListMonitorsRequest(tag=["gone"]), metadata=_auth(persona.pat), timeout=0.5
            )
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert wait_until(lambda: waiting_reads("monitor_tags") == 0, STATEMENT_TIMEOUT_MS / 1000 - 1)
