"""The checking engine end to end, in the session server (intervals shrunk
20×: 30 s runs every 1.5 s): thresholds flip the status after exactly the
configured counts and store events; intervals run start to start; paused
monitors never run; an edit takes effect at the next run; stats, timeline and
metrics follow the results; the monthly check cap stops checks.

The scheduler's timing and status logic runs in memory, the same on every
backend: those tests run on SQLite only. What the database holds and answers
(timestamps, rollups and stats, check types and metrics) is tested on both."""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from core.storage import tables as t
from tests.conftest import (
    CHECKING_ENV,
    METRICS_TOKEN,
    SQLITE_ONLY,
    Persona,
    Server,
    register,
    set_plan,
    start_server,
    stop_server,
)
from tests.polling import wait_for
from tests.targets import Target, http_target

INTERVAL = 1.5  # intervalSec 30 × OBSERVE_CHECK_INTERVAL_SCALE 0.05


@pytest.fixture
def target() -> Iterator[Target]:
    with http_target() as tgt:
        yield tgt


def create(c: httpx.Client, target: Target, path: str, **body: Any) -> dict[str, Any]:
    payload = {"name": path, "type": "http", "url": f"{target.url}{path}", "intervalSec": 30, "timeoutMs": 1000}
    r = c.post("/api/v1/monitors", json={**payload, **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


def results(server: Server, monitor_id: int) -> list[Any]:
    r = t.check_results
    return list(server.sql(select(r).where(r.c.monitor_id == monitor_id).order_by(r.c.checked_at)))


def events(server: Server, monitor_id: int) -> list[Any]:
    e = t.monitor_events
    return list(server.sql(select(e).where(e.c.monitor_id == monitor_id).order_by(e.c.id)))


def status(c: httpx.Client, monitor_id: int) -> str:
    return str(c.get(f"/api/v1/monitors/{monitor_id}").json()["status"])


def thresholds_flip_the_status_after_exactly_the_configured_counts(
    owner: Persona, server: Server, target: Target
) -> None:
    target.status = 500
    with owner.client() as c:
        m = create(c, target, "/flip", failureThreshold=3, recoveryThreshold=2)
        wait_for(lambda: status(c, m["id"]) == "down", what="down")
        target.status = 200
        wait_for(lambda: status(c, m["id"]) == "up", what="up")
    rows = results(server, m["id"])
    oks = [row.ok for row in rows]
    third_failure = 2  # results 0, 1, 2 failed: the 3rd flips pending → down
    assert oks[:3] == [False, False, False]
    first_ok = oks.index(True)
    assert oks[first_ok : first_ok + 2] == [True, True]
    changes = events(server, m["id"])
    assert [(e.from_status, e.to_status) for e in changes[:2]] == [("pending", "down"), ("down", "up")]
    assert changes[0].at == rows[third_failure].checked_at
    assert changes[0].reason == "status"
    assert changes[1].at == rows[first_ok + 1].checked_at  # the 2nd success, not the 1st
    assert rows[third_failure].status_code == 500
    assert rows[third_failure].reason == "status"


def a_down_monitor_stays_down_until_recovery_threshold(owner: Persona, server: Server, target: Target) -> None:
    target.status = 200
    with owner.client() as c:
        m = create(c, target, "/recover", failureThreshold=1, recoveryThreshold=3)
        wait_for(lambda: status(c, m["id"]) == "up", what="up")
        target.status = 503
        wait_for(lambda: status(c, m["id"]) == "down", what="down")
        target.status = 200
        wait_for(lambda: status(c, m["id"]) == "up", what="up again")
    rows = results(server, m["id"])
    oks = [row.ok for row in rows]
    last_failure = max(i for i, ok in enumerate(oks) if not ok)
    changes = events(server, m["id"])
    assert [(e.from_status, e.to_status) for e in changes] == [("pending", "up"), ("up", "down"), ("down", "up")]
    assert changes[2].at == rows[last_failure + 3].checked_at


def intervals_run_start_to_start_and_paused_monitors_never_run(owner: Persona, server: Server, target: Target) -> None:
    with owner.client() as c:
        running = create(c, target, "/cadence")
        paused = create(c, target, "/paused", paused=True)
        wait_for(lambda: len(results(server, running["id"])) >= 5, what="5 checks")
        assert target.count("/paused") == 0
        assert results(server, paused["id"]) == []
        assert status(c, paused["id"]) == "paused"
        r = c.patch(f"/api/v1/monitors/{paused['id']}", json={"paused": False})
        assert r.status_code == 200
        wait_for(lambda: target.count("/paused") >= 1, what="unpaused monitor to run")
    starts = [row.checked_at.timestamp() for row in results(server, running["id"])]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(abs(gap - INTERVAL) < 0.3 for gap in gaps), gaps


def an_edit_takes_effect_at_the_next_run_and_delete_stops_checks(
    owner: Persona, server: Server, target: Target
) -> None:
    with owner.client() as c:
        m = create(c, target, "/old")
        wait_for(lambda: target.count("/old") >= 1, what="first check")
        assert c.patch(f"/api/v1/monitors/{m['id']}", json={"url": f"{target.url}/new"}).status_code == 200
        wait_for(lambda: target.count("/new") >= 1, what="a check of the new URL")
        # A monitor has one check in flight at most: every check of the old URL has arrived by now.
        old = target.count("/old")
        # Two intervals more: the new URL is checked twice again, the old one never.
        wait_for(lambda: target.count("/new") >= 3, what="checks of the new URL")
        assert target.count("/old") == old
        assert c.delete(f"/api/v1/monitors/{m['id']}").status_code == 204
        time.sleep(0.5)
        new = target.count("/new")
        time.sleep(2 * INTERVAL)
        assert target.count("/new") == new


SCHEDULING = [
    thresholds_flip_the_status_after_exactly_the_configured_counts,
    a_down_monitor_stays_down_until_recovery_threshold,
    intervals_run_start_to_start_and_paused_monitors_never_run,
    an_edit_takes_effect_at_the_next_run_and_delete_stops_checks,
]


@SQLITE_ONLY
def test_scheduling_scenarios(owner: Persona, server: Server) -> None:
    """Each scenario waits on the server's own clock, not on the others: they run side by side in
    threads, each with a target of its own (a scenario sets its target's answer)."""

    def run(scenario: Callable[[Persona, Server, Target], None]) -> None:
        with http_target() as target:
            scenario(owner, server, target)

    with ThreadPoolExecutor(len(SCHEDULING)) as pool:
        for future in [pool.submit(run, scenario) for scenario in SCHEDULING]:
            future.result()


def test_check_types_and_expectations_reach_the_checker(owner: Persona, server: Server, target: Target) -> None:
    target.status, target.body = 500, b"maintenance page"
    with owner.client() as c:
        expect_500 = create(c, target, "/e500", expectedStatus=[500], failureThreshold=1)
        klass = create(c, target, "/class", expectedStatus="5xx", failureThreshold=1)
        keyword = create(c, target, "/kw", type="keyword", keyword="maintenance", expectedStatus="5xx")
        missing = create(
            c, target, "/kw2", type="keyword", keyword="all good", expectedStatus="5xx", failureThreshold=1
        )
        tcp_port = int(target.url.rsplit(":", 1)[1])
        tcp = create(c, target, "/tcp", type="tcp", url=None, host="127.0.0.1", port=tcp_port)
        expectations = {expect_500["id"]: "up", klass["id"]: "up", keyword["id"]: "up", missing["id"]: "down"}
        expectations[tcp["id"]] = "up"
        wait_for(lambda: all(status(c, i) == e for i, e in expectations.items()), what=str(expectations))
        checks = c.get(f"/api/v1/monitors/{missing['id']}/checks").json()["checks"]
    assert checks[0]["reason"] == "keyword"
    assert checks[0]["statusCode"] == 500
    assert set(checks[0]["timings"]) >= {"connect", "firstByte"}


def test_history_endpoints_follow_the_results(owner: Persona, server: Server, target: Target) -> None:
    target.status = 200
    with owner.client() as c:
        m = create(c, target, "/history", failureThreshold=1)
        wait_for(lambda: len(results(server, m["id"])) >= 3, what="3 checks")
        target.status = 500
        wait_for(lambda: status(c, m["id"]) == "down", what="down")
        c.patch(f"/api/v1/monitors/{m['id']}", json={"paused": True})
        time.sleep(0.5)  # the last results flush (every 100 ms here)
        rows = results(server, m["id"])
        stats = c.get(f"/api/v1/monitors/{m['id']}/stats").json()
        timeline = c.get(f"/api/v1/monitors/{m['id']}/timeline", params={"bucketSec": 300}).json()
        daily = c.get(
            f"/api/v1/monitors/{m['id']}/timeline",
            params={"from": "2026-01-01T00:00:00Z", "to": "2026-12-31T00:00:00Z", "bucketSec": 86400},
        )
        checks = c.get(f"/api/v1/monitors/{m['id']}/checks", params={"limit": 2}).json()
        page2 = c.get(f"/api/v1/monitors/{m['id']}/checks", params={"limit": 2, "cursor": checks["nextCursor"]}).json()
        bad = [
            c.get(f"/api/v1/monitors/{m['id']}/timeline", params={"bucketSec": 301}),
            c.get(f"/api/v1/monitors/{m['id']}/timeline", params={"bucketSec": 300, "from": "2020-01-01T00:00:00Z"}),
            c.get(
                f"/api/v1/monitors/{m['id']}/timeline",
                params={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            ),
        ]
    ups = sum(row.ok for row in rows)
    for window in ("last24h", "last7d", "last30d", "last90d"):
        assert (stats[window]["checks"], stats[window]["upChecks"]) == (len(rows), ups), window
    assert stats["last24h"]["uptimePct"] == pytest.approx(100 * ups / len(rows), abs=1e-3)
    timed = sorted(row.response_ms for row in rows)
    assert stats["last24h"]["minMs"] == pytest.approx(timed[0], abs=1e-3)
    assert stats["last24h"]["maxMs"] == pytest.approx(timed[-1], abs=1e-3)
    # Raw rows keep response times rounded; rollups keep them whole (abs 1e-3, as above).
    assert timed[0] - 1e-3 <= stats["last24h"]["p50Ms"] <= timed[-1] + 1e-3
    assert timeline["bucketSec"] == 300
    assert len(timeline["buckets"]) in (288, 289)
    assert sum(b["checks"] for b in timeline["buckets"]) == len(rows)
    assert daily.status_code == 200
    assert sum(b["checks"] for b in daily.json()["buckets"]) == len(rows)
    newest = sorted(rows, key=lambda r: r.id, reverse=True)
    listed = [datetime.fromisoformat(x["checkedAt"]) for x in checks["checks"] + page2["checks"]]
    # Check times to the millisecond (the reply's precision), truncated.
    assert listed == [r.checked_at.replace(microsecond=r.checked_at.microsecond // 1000 * 1000) for r in newest[:4]]
    assert [r.status_code for r in bad] == [400, 400, 400]
    assert bad[0].json()["fields"][0]["path"] == "bucketSec"


def test_metrics_carry_each_monitor_with_its_labels(owner: Persona, server: Server, target: Target) -> None:
    target.status = 200
    with owner.client() as c:
        m = create(c, target, "/metrics", tags=["prod", "eu"], name="shop front")
        wait_for(lambda: status(c, m["id"]) == "up", what="up")
    text = httpx.get(f"{server.base_url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}).text
    labels = {
        "monitor_id": str(m["id"]),
        "monitor_name": "shop front",
        "monitor_type": "http",
        "monitor_tags": "prod,eu",
    }
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels == labels
    }
    assert samples["observe_monitor_status"] == 1.0
    assert samples["observe_monitor_up"] == 1.0
    assert 0 < samples["observe_monitor_response_time_seconds"] < 1.0
    assert "observe_scheduler_lag_seconds_bucket" in text
    assert 'observe_checks_total{result="up",type="http"}' in text


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("capped"),
        backend="sqlite",
        extra_env={**CHECKING_ENV, "OBSERVE_PLANS": json.dumps({"capped": {"monthlyChecks": 3}})},
        role="all",
    )
    yield srv
    stop_server(srv)


def test_the_monthly_check_cap_stops_checks(capped_server: Server, target: Target) -> None:
    persona = register(capped_server)
    assert set_plan(capped_server, persona.org_id, "capped").returncode == 0
    with persona.client() as c:
        m = create(c, target, "/capped")
        wait_for(lambda: c.get("/api/v1/me").json()["usage"]["monthlyChecks"] >= 3, what="3 checks")
        # The next two due runs come and are skipped for the cap (its only monitor): no 4th check.
        wait_for(lambda: skipped_for_the_cap(capped_server) >= 2, what="two runs skipped for the cap", every=0.2)
        assert c.get("/api/v1/me").json()["usage"]["monthlyChecks"] == 3
    assert target.count("/capped") == 3
    assert len(results(capped_server, m["id"])) == 3


def skipped_for_the_cap(server: Server) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{server.base_url}/metrics").text):
        for sample in family.samples:
            if sample.name == "observe_checks_skipped_total" and sample.labels == {"reason": "plan_limit_checks"}:
                return sample.value
    return 0.0


@pytest.fixture(scope="module")
def narrow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Few check slots: 8 in all, 4 per target."""
    env = {**CHECKING_ENV, "OBSERVE_CHECK_CONCURRENCY": "8", "OBSERVE_CHECK_TARGET_CONCURRENCY": "4"}
    srv = start_server(tmp_path_factory.mktemp("narrow"), backend="sqlite", extra_env=env, role="all")
    yield srv
    stop_server(srv)


def test_a_hanging_target_cannot_starve_the_others(narrow_server: Server, target: Target) -> None:
    # A port that completes TCP handshakes (the kernel's backlog) but never answers.
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(1000)
    persona = register(narrow_server)
    try:
        with persona.client() as c:
            slow = [
                {"name": f"slow{i}", "type": "http", "url": f"http://127.0.0.1:{hang.getsockname()[1]}/{i}"}
                for i in range(30)
            ]
            r = c.post(
                "/api/v1/monitors/bulk", json={"monitors": [{**m, "intervalSec": 30, "timeoutMs": 1000} for m in slow]}
            )
            assert r.status_code == 201, r.text
            fast = [create(c, target, f"/fast{i}") for i in range(4)]
            # Six checks each: five intervals with the hanging checks holding their slots all along.
            wait_for(
                lambda: all(len(results(narrow_server, m["id"])) >= 6 for m in fast),
                what="six checks of each fast monitor",
                every=0.5,
            )
        for m in fast:
            rows = results(narrow_server, m["id"])
            starts = [row.checked_at.timestamp() for row in rows]
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert len(rows) >= 6, len(rows)
            assert all(row.ok for row in rows)
            assert max(gaps) < INTERVAL + 0.3, gaps
        timed_out = [row for m in r.json()["monitors"] for row in results(narrow_server, m["id"])]
        assert timed_out
        assert {row.reason for row in timed_out} == {"timeout"}
    finally:
        hang.close()


SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
MILLIS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_check_times_carry_milliseconds_and_other_times_whole_seconds(
    owner: Persona, server: Server, target: Target
) -> None:
    import grpc
    from observe.v1 import monitors_pb2, monitors_pb2_grpc

    with owner.client() as c:
        m = create(c, target, "/precision")
        wait_for(lambda: c.get(f"/api/v1/monitors/{m['id']}").json()["lastCheckedAt"], what="a check")
        monitor = c.get(f"/api/v1/monitors/{m['id']}").json()
        check = c.get(f"/api/v1/monitors/{m['id']}/checks").json()["checks"][0]
        c.patch(f"/api/v1/monitors/{m['id']}", json={"paused": True})
    assert MILLIS.fullmatch(monitor["lastCheckedAt"]), monitor["lastCheckedAt"]
    assert MILLIS.fullmatch(check["checkedAt"]), check["checkedAt"]
    for key in ("createdAt", "updatedAt"):
        assert SECONDS.fullmatch(monitor[key]), monitor[key]
    md = [("authorization", f"Bearer {owner.pat}")]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = monitors_pb2_grpc.MonitorServiceStub(channel)
        got = stub.GetMonitor(monitors_pb2.GetMonitorRequest(id=m["id"]), metadata=md).monitor
        checks = stub.ListMonitorChecks(monitors_pb2.ListMonitorChecksRequest(id=m["id"]), metadata=md).checks
    assert got.last_checked_at.nanos % 1_000_000 == 0
    assert checks[0].checked_at.nanos % 1_000_000 == 0
    assert got.created_at.nanos == got.updated_at.nanos == 0
    # Both transports show the same instant.
    rest_ms = datetime.fromisoformat(check["checkedAt"]).timestamp() * 1000
    assert round(rest_ms) == checks[0].checked_at.seconds * 1000 + checks[0].checked_at.nanos // 1_000_000
