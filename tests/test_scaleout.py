"""Checker processes sharing monitors through leases in PostgreSQL
(``observe serve --role checker``): with two, every monitor is checked once
per interval, never twice, and both do part of the work; when one is killed
the other takes its monitors within one interval."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from core.storage import tables as t
from tests.background import BackgroundRun, run_beside
from tests.conftest import PG_URL, Server, register, start_server, stop_server
from tests.polling import wait_for
from tests.targets import http_target

pytestmark = pytest.mark.skipif(not PG_URL, reason="needs OBSERVE_TEST_DATABASE_URL (CI sets it)")

INTERVAL = 4.5  # intervalSec 30 × 0.15
ENV = {
    "OBSERVE_ALLOW_PRIVATE_TARGETS": "true",
    "OBSERVE_CHECK_INTERVAL_SCALE": "0.15",
    "OBSERVE_LEASE_TTL_SEC": "2",
    "OBSERVE_CHECK_FLUSH_MS": "200",
}
MONITORS = 40


def scaleout_database() -> str:
    """A database of its own, so the session server's scheduler stays out of it."""
    import asyncpg

    assert PG_URL
    base = PG_URL.replace("postgresql+asyncpg://", "postgresql://")

    async def run() -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute("DROP DATABASE IF EXISTS observe_scaleout WITH (FORCE)")
            await conn.execute("CREATE DATABASE observe_scaleout")
        finally:
            await conn.close()

    asyncio.run(run())
    return PG_URL.rsplit("/", 1)[0] + "/observe_scaleout"


def held(server: Server) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "observe_scheduler_monitors":
                return sample.value
    raise AssertionError("no observe_scheduler_monitors")


@contextlib.contextmanager
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    url = scaleout_database()
    servers: list[Server] = []
    try:
        api = start_server(tmp_path / "api", backend="postgresql", database_url=url, extra_env=ENV, role="api")
        servers.append(api)

        def checker(name: str) -> Server:
            return start_server(tmp_path / name, backend="postgresql", database_url=url, extra_env=ENV, role="checker")

        # Side by side (the API server has migrated the database): each start is mostly waiting for imports.
        with ThreadPoolExecutor(2) as pool:
            started = [pool.submit(checker, name) for name in ("a", "b")]
            for future in started:
                with contextlib.suppress(Exception):
                    servers.append(future.result())
        checkers = [future.result() for future in started]
        yield {"api": api, "checkers": checkers}
    finally:
        for srv in servers:
            if srv.process.poll() is None:
                stop_server(srv)


@pytest.fixture(scope="session")
def scaleout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundRun]:
    """The run mostly waits for intervals to pass: it goes on in a thread beside the suite."""
    yield from run_beside(tmp_path_factory, "scaleout", two_checkers)


@pytest.mark.background_start
def test_the_scaleout_run_starts(scaleout: BackgroundRun) -> None:
    assert scaleout.is_alive() or scaleout.error is None


@pytest.mark.background_finish
def test_two_checkers_check_each_monitor_once_per_interval(scaleout: BackgroundRun) -> None:
    scaleout.result(timeout=180)


def starts_by_monitor(api: Server, since: float) -> dict[int, list[float]]:
    r = t.check_results
    out: dict[int, list[float]] = {}
    for row in api.sql(select(r.c.monitor_id, r.c.checked_at).order_by(r.c.checked_at)):
        stamp = row.checked_at.timestamp()
        if stamp >= since:
            out.setdefault(row.monitor_id, []).append(stamp)
    return out


def two_checkers(tmp_path: Path) -> str:
    with cluster(tmp_path) as servers:
        check_each_monitor_once_per_interval(servers)
    return "ok"


def check_each_monitor_once_per_interval(cluster: dict[str, Any]) -> None:
    api: Server = cluster["api"]
    a, b = cluster["checkers"]
    owner = register(api)
    with http_target() as target, owner.client() as c:
        body = [
            {"name": f"m{i}", "type": "http", "url": f"{target.url}/{i}", "intervalSec": 30, "timeoutMs": 2000}
            for i in range(MONITORS)
        ]
        r = c.post("/api/v1/monitors/bulk", json={"monitors": body})
        assert r.status_code == 201, r.text
        ids = [m["id"] for m in r.json()["monitors"]]
        time.sleep(2 * INTERVAL)  # leases settle: both checkers join, claim and balance
        window_start = time.time()
        time.sleep(3 * INTERVAL)
        window_end = time.time()
        shares = (held(a), held(b))
        starts = starts_by_monitor(api, window_start)
        for monitor_id in ids:
            mine = [s for s in starts.get(monitor_id, []) if s < window_end]
            gaps = [y - x for x, y in itertools.pairwise(mine)]
            assert 2 <= len(mine) <= 4, (monitor_id, mine)
            assert all(gap > 0.8 * INTERVAL for gap in gaps), (monitor_id, gaps)  # never twice
            assert all(gap < 1.5 * INTERVAL for gap in gaps), (monitor_id, gaps)  # never skipped
        assert sum(shares) == MONITORS
        assert min(shares) >= MONITORS // 4, shares

        # Kill one checker outright: its leases lapse and the other takes its monitors.
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait()
        killed_at = time.time()

        def taken_over() -> dict[int, list[float]] | None:
            after = starts_by_monitor(api, killed_at - INTERVAL)
            return after if all(any(s > killed_at + INTERVAL for s in after.get(i, [])) for i in ids) else None

        # Until every monitor has been checked more than one interval after the kill (a gap of two
        # intervals or more across the takeover would show below).
        after = wait_for(taken_over, what="every monitor checked again after the kill", timeout=30, every=0.5)
        assert held(b) == MONITORS
        for monitor_id in ids:
            mine = after.get(monitor_id, [])
            assert any(s > killed_at + INTERVAL for s in mine), (monitor_id, mine)
            gaps = [y - x for x, y in itertools.pairwise(mine)]
            # Taken over within one interval: no gap reaches two intervals.
            assert all(0.8 * INTERVAL < gap < 2 * INTERVAL for gap in gaps), (monitor_id, gaps)
