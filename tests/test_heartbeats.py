"""Heartbeats end to end on a real server (both backends): pings keep a
monitor up, silence past interval + grace opens an incident within a second
of the deadline, /fail and a non-zero exit open one at once, a start that
never ends opens one after the grace, a success resolves; rotation, HEAD,
truncated bodies, the pings log. Intervals and graces are scaled by the
session server's OBSERVE_CHECK_INTERVAL_SCALE (0.05: 60 s → 3 s).

Independent scenarios run side by side in threads: each waits on the
server's own clock, not on the others."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from google.api.httpbody_pb2 import HttpBody
from observe.v1 import heartbeats_pb2, heartbeats_pb2_grpc
from sqlalchemy import select

from core.heartbeats.tables import heartbeat_pings as hp
from core.storage import tables as t
from tests.conftest import (
    BACKENDS,
    CHECKING_ENV,
    PG_URL,
    Persona,
    Server,
    database_beside,
    register,
    start_server,
    stop_server,
)
from tests.polling import wait_for

SCALE = float(CHECKING_ENV["OBSERVE_CHECK_INTERVAL_SCALE"])


def heartbeat(persona: Persona, name: str, **settings: Any) -> tuple[int, str]:
    """A heartbeat monitor: (id, ping URL) — the two steps a user takes."""
    with persona.client() as c:
        r = c.post("/api/v1/monitors", json={"name": name, "type": "heartbeat", **settings})
        assert r.status_code == 201, r.text
        monitor_id = r.json()["id"]
        secrets = c.get(f"/api/v1/monitors/{monitor_id}/secrets")
        assert secrets.status_code == 200, secrets.text
    return monitor_id, secrets.json()["heartbeatUrl"]


def ping(url: str, suffix: str = "", method: str = "POST", **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url + suffix, timeout=30, **kwargs)


def status(persona: Persona, monitor_id: int) -> str:
    with persona.client() as c:
        return str(c.get(f"/api/v1/monitors/{monitor_id}").json()["status"])


def incidents(persona: Persona, monitor_id: int) -> list[dict[str, Any]]:
    with persona.client() as c:
        r = c.get("/api/v1/incidents", params={"monitorId": monitor_id})
        assert r.status_code == 200, r.text
        return list(r.json()["incidents"])


def pings(persona: Persona, monitor_id: int, **params: Any) -> dict[str, Any]:
    with persona.client() as c:
        r = c.get(f"/api/v1/monitors/{monitor_id}/pings", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())


def down_events(server: Server, monitor_id: int) -> list[Any]:
    e = t.monitor_events
    return list(server.sql(select(e.c.at, e.c.reason).where(e.c.monitor_id == monitor_id, e.c.to_status == "down")))


def parse(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def open_incident(persona: Persona, monitor_id: int) -> dict[str, Any]:
    found = wait_for(
        lambda: [i for i in incidents(persona, monitor_id) if i["resolvedAt"] is None], "an open incident", timeout=15
    )
    return dict(found[0])


def resolved(persona: Persona, monitor_id: int) -> None:
    wait_for(
        lambda: incidents(persona, monitor_id) and all(i["resolvedAt"] for i in incidents(persona, monitor_id)),
        "the incident resolved",
        timeout=15,
    )


# ---- the scenarios (each a function of the persona and the server) ----------


def silence_opens_an_incident_at_the_deadline(server: Server, persona: Persona) -> None:
    monitor_id, url = heartbeat(persona, "nightly-backup", intervalSec=60, graceSec=20)
    assert status(persona, monitor_id) == "pending"
    assert incidents(persona, monitor_id) == []
    # A job pinging every 0.8 s for longer than interval + grace (3 + 1 s) stays up.
    for n in range(6):
        if n:
            time.sleep(0.8)  # the job's own cadence
        assert ping(url).json() == {"ok": True}
        assert status(persona, monitor_id) == "up"
    assert incidents(persona, monitor_id) == []
    last = parse(pings(persona, monitor_id, limit=1)["pings"][0]["at"])
    incident = open_incident(persona, monitor_id)
    assert incident["cause"]["reason"] == "late"
    assert status(persona, monitor_id) == "down"
    deadline = last + timedelta(seconds=(60 + 20) * SCALE)
    [(at, reason)] = down_events(server, monitor_id)
    assert reason == "late"
    assert deadline <= at < deadline + timedelta(seconds=1), (deadline, at)
    # A success resolves it.
    assert ping(url, method="GET").status_code == 200
    resolved(persona, monitor_id)
    assert status(persona, monitor_id) == "up"


def fail_and_exit_status_open_one_at_once(server: Server, persona: Persona) -> None:
    for name, failure, success in (("fail", "/fail", ""), ("exit", "/1", "/0")):
        monitor_id, url = heartbeat(persona, f"job-{name}", intervalSec=3600, graceSec=60)
        assert ping(url).status_code == 200
        assert ping(url, failure, content="boom").status_code == 200
        # Down in the ping's own transaction: no waiting for a watcher.
        assert status(persona, monitor_id) == "down"
        incident = open_incident(persona, monitor_id)
        assert incident["cause"]["reason"] == ("fail" if name == "fail" else "exit_status")
        assert ping(url, success).status_code == 200
        assert status(persona, monitor_id) == "up"
        resolved(persona, monitor_id)


def a_start_without_an_end_opens_one_after_the_grace(server: Server, persona: Persona) -> None:
    monitor_id, url = heartbeat(persona, "etl", intervalSec=3600, graceSec=20)
    # A start and its end, paired by run id: the run time is recorded.
    rid = str(uuid.uuid4())
    assert ping(url, f"/start?rid={rid}").status_code == 200
    assert ping(url, f"/0?rid={rid}").status_code == 200
    ended = pings(persona, monitor_id, limit=1)["pings"][0]
    assert ended["kind"] == "exit"
    assert ended["exitStatus"] == 0
    assert ended["rid"] == rid
    assert ended["runtimeMs"] is not None
    assert ended["runtimeMs"] >= 0
    # A start that never ends: down one grace (1 s) later, not an interval (3 min).
    assert ping(url, "/start").status_code == 200
    started = parse(pings(persona, monitor_id, limit=1)["pings"][0]["at"])
    incident = open_incident(persona, monitor_id)
    assert incident["cause"]["reason"] == "start_timeout"
    deadline = started + timedelta(seconds=20 * SCALE)
    [(at, _)] = down_events(server, monitor_id)
    assert deadline <= at < deadline + timedelta(seconds=1), (deadline, at)
    assert ping(url).status_code == 200
    resolved(persona, monitor_id)


def rotation_head_and_bodies(server: Server, persona: Persona) -> None:
    monitor_id, url = heartbeat(persona, "rotating", intervalSec=3600)
    head = ping(url, method="HEAD")
    assert head.status_code == 200
    assert head.content == b""
    big = bytes(range(256)) * 800  # 204,800 bytes
    assert ping(url, content=big, headers={"content-type": "application/octet-stream"}).status_code == 200
    listed = pings(persona, monitor_id)["pings"]
    assert [p["kind"] for p in listed] == ["success", "success"]
    assert listed[0]["bodyBytes"] == 204_800
    assert len(listed[0]["body"]) > 0
    assert listed[1]["bodyBytes"] == 0  # the HEAD
    # The stored body is the first 100 KB.
    [(stored,)] = server.sql(select(hp.c.body).where(hp.c.monitor_id == monitor_id, hp.c.body_bytes > 0))
    assert bytes(stored) == big[:102_400]
    with persona.client() as c:
        rotated = c.post(f"/api/v1/monitors/{monitor_id}/rotate-heartbeat-token")
        assert rotated.status_code == 200, rotated.text
    new_url = rotated.json()["heartbeatUrl"]
    old = ping(url)
    assert old.status_code == 404
    assert old.json()["code"] == "HEARTBEAT_TOKEN_UNKNOWN"
    assert ping(new_url).status_code == 200
    assert ping(url, "/start").status_code == 404


def paused_pings_move_nothing_and_a_resume_restarts_the_clock(server: Server, persona: Persona) -> None:
    monitor_id, url = heartbeat(persona, "paused-job", intervalSec=30, graceSec=0)
    assert ping(url).status_code == 200
    with persona.client() as c:
        assert c.patch(f"/api/v1/monitors/{monitor_id}", json={"paused": True}).status_code == 200
    assert ping(url, "/fail").status_code == 200  # recorded, but moves nothing
    assert status(persona, monitor_id) == "paused"
    assert pings(persona, monitor_id, limit=1)["pings"][0]["kind"] == "fail"
    assert ping(url).status_code == 200
    time.sleep(2.0)  # paused for longer than a period (1.5 s): its last success is overdue
    resumed = datetime.now(UTC)
    with persona.client() as c:
        assert c.patch(f"/api/v1/monitors/{monitor_id}", json={"paused": False}).status_code == 200
    assert status(persona, monitor_id) == "up"
    open_incident(persona, monitor_id)  # one period (1.5 s) after the resume, nothing came
    [(at, reason)] = down_events(server, monitor_id)
    assert reason == "late"
    assert at >= resumed + timedelta(seconds=30 * SCALE)


def grpc_callers_ping_too(server: Server, persona: Persona) -> None:
    monitor_id, url = heartbeat(persona, "grpc-job", intervalSec=3600)
    token = url.rsplit("/", 1)[1]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = heartbeats_pb2_grpc.HeartbeatServiceStub(channel)
        reply = stub.Ping(heartbeats_pb2.PingRequest(token=token, signal="3", payload=HttpBody(data=b"exit 3")))
        assert reply.ok
        with pytest.raises(grpc.RpcError) as refused:
            stub.Ping(heartbeats_pb2.PingRequest(token="hb_unknown"))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    [last] = pings(persona, monitor_id)["pings"]
    assert (last["kind"], last["exitStatus"], last["body"]) == ("exit", 3, "exit 3")
    assert status(persona, monitor_id) == "down"


def a_token_refused_while_the_monitor_is_of_another_type_works_again(server: Server, persona: Persona) -> None:
    monitor_id, url = heartbeat(persona, "shifting", intervalSec=3600)
    assert ping(url).status_code == 200
    with persona.client() as c:
        r = c.patch(f"/api/v1/monitors/{monitor_id}", json={"type": "tcp", "host": "127.0.0.1", "port": 9})
        assert r.status_code == 200, r.text
    for _ in range(2):  # refused, and not remembered as no one's token
        assert ping(url).status_code == 404
    with persona.client() as c:
        r = c.patch(f"/api/v1/monitors/{monitor_id}", json={"type": "heartbeat"})
        assert r.status_code == 200, r.text
    assert ping(url).status_code == 200


SCENARIOS: list[Callable[[Server, Persona], None]] = [
    a_token_refused_while_the_monitor_is_of_another_type_works_again,
    paused_pings_move_nothing_and_a_resume_restarts_the_clock,
    grpc_callers_ping_too,
    silence_opens_an_incident_at_the_deadline,
    fail_and_exit_status_open_one_at_once,
    a_start_without_an_end_opens_one_after_the_grace,
    rotation_head_and_bodies,
]


@pytest.fixture(scope="module", params=BACKENDS)
def quiet_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of these scenarios' own: they time lateness to within a second, and the session server
    is busy with the contract runs' hundreds of monitors (heartbeats among them) at the same time."""
    backend = request.param
    srv = start_server(
        tmp_path_factory.mktemp(f"heartbeats-{backend}"),
        backend=backend,
        database_url=database_beside(PG_URL, "_heartbeats") if backend == "postgresql" and PG_URL else None,
        extra_env=CHECKING_ENV,
        role="all",
    )
    yield srv
    stop_server(srv)


def test_heartbeat_scenarios(quiet_server: Server) -> None:
    server = quiet_server
    persona = register(server)
    with ThreadPoolExecutor(len(SCENARIOS)) as pool:
        futures = [pool.submit(scenario, server, persona) for scenario in SCENARIOS]
        for future in futures:
            future.result()


def test_pings_past_the_retention_are_dropped(server: Server) -> None:
    """Like check results, pings are kept OBSERVE_CHECK_RETENTION_DAYS (7)."""
    import asyncio

    from core.heartbeats.watcher import LatenessWatcher
    from core.storage.db import Database

    persona = register(server)
    monitor_id, url = heartbeat(persona, "kept", intervalSec=3600)
    assert ping(url, content="recent").status_code == 200
    old = datetime.now(UTC) - timedelta(days=8)
    server.sql(
        hp.insert().values(
            monitor_id=monitor_id, at=old, kind="success", ip="", user_agent="", body_bytes=3, body=b"old"
        )
    )
    assert [p["body"] for p in pings(persona, monitor_id)["pings"]] == ["old", "recent"]

    async def prune() -> None:
        db = Database(server.database_url)
        try:
            await LatenessWatcher(db, retention_days=7).prune(datetime.now(UTC))
        finally:
            await db.close()

    asyncio.run(prune())
    assert [p["body"] for p in pings(persona, monitor_id)["pings"]] == ["recent"]


def test_bad_pings_and_the_pings_log(server: Server) -> None:
    persona, outsider = register(server), register(server)
    monitor_id, url = heartbeat(persona, "paged", intervalSec=3600)
    unknown = ping(url.rsplit("/", 1)[0] + "/hb_" + "x" * 40)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "HEARTBEAT_TOKEN_UNKNOWN"
    bad = ping(url, "/256")
    assert bad.status_code == 400
    assert bad.json()["fields"][0]["path"] == "signal"
    bad_rid = ping(url, "?rid=not-a-uuid")
    assert bad_rid.status_code == 400
    assert bad_rid.json()["fields"][0]["path"] == "rid"
    for n in range(5):
        assert ping(url, content=f"run {n}").status_code == 200
    first = pings(persona, monitor_id, limit=3)
    assert [p["body"] for p in first["pings"]] == ["run 4", "run 3", "run 2"]
    rest = pings(persona, monitor_id, limit=3, cursor=first["nextCursor"])
    assert [p["body"] for p in rest["pings"]] == ["run 1", "run 0"]
    assert rest["nextCursor"] == ""
    with outsider.client() as c:
        assert c.get(f"/api/v1/monitors/{monitor_id}/pings").status_code == 404
    with persona.client() as c:
        assert c.get(f"/api/v1/monitors/{monitor_id}/pings", params={"cursor": "nope!"}).status_code == 400
        metrics = c.get("/metrics").text
    # The group commit's counters: no token, no monitor named, on /metrics for anyone.
    for series in (
        'observe_heartbeat_pings_total{outcome="stored"}',
        'observe_heartbeat_pings_total{outcome="unknown_token"}',
        "observe_heartbeat_batches_total",
        "observe_heartbeat_late_total",
    ):
        assert series in metrics, series


@pytest.mark.parametrize(
    ("cron", "last_success", "expected_utc"),
    [
        # 09:00 New York: 14:00 UTC in winter, 13:00 UTC the day clocks go forward.
        ("0 9 * * *", "2026-03-07T14:00:00+00:00", "2026-03-08T13:00:00+00:00"),
        # 02:30 does not exist on 8 March: it runs at 03:00 EDT (07:00 UTC), as cron does.
        ("30 2 * * *", "2026-03-07T07:30:00+00:00", "2026-03-08T07:00:00+00:00"),
        # 01:30 happens twice on 1 November: a daily job runs at the first (EDT, 05:30 UTC) only.
        ("30 1 * * *", "2026-10-31T05:30:00+00:00", "2026-11-01T05:30:00+00:00"),
        ("30 1 * * *", "2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"),
        # An every-30-minutes job runs in both 01:xx hours.
        ("*/30 * * * *", "2026-11-01T05:30:00+00:00", "2026-11-01T06:00:00+00:00"),
    ],
)
def test_a_cron_schedule_in_new_york_fires_on_the_right_minute_across_dst(
    cron: str, last_success: str, expected_utc: str
) -> None:
    from core.heartbeats.schedule import Schedule, State, apply_ping, expire

    schedule = Schedule(
        interval=timedelta(seconds=60), grace=timedelta(seconds=120), cron=cron, timezone="America/New_York"
    )
    state = State()
    success = datetime.fromisoformat(last_success)
    assert apply_ping(state, schedule, "success", None, None, success) == (expire_up(), None)
    expected = datetime.fromisoformat(expected_utc)
    assert schedule.expected_after(success) == expected
    deadline = expected + timedelta(seconds=120)
    assert state.deadline_at == deadline
    # Time is the test's: a second before the deadline nothing happens, at it the monitor is down.
    assert expire(state, schedule, deadline - timedelta(seconds=1)) is None
    assert state.status == "up"
    change = expire(state, schedule, deadline)
    assert change is not None
    assert change.to_status == "down"
    assert change.reason == "late"
    assert state.deadline_at is None


def expire_up() -> Any:
    from core.heartbeats.schedule import Change

    return Change("up", None, None)


def test_an_end_without_a_run_id_ends_the_latest_start() -> None:
    from core.heartbeats.schedule import Schedule, State, apply_ping

    schedule = Schedule(interval=timedelta(seconds=60), grace=timedelta(seconds=10))
    state = State()
    t0 = datetime.fromisoformat("2026-11-30T00:00:00+00:00")
    apply_ping(state, schedule, "start", None, "a" * 8, t0)
    apply_ping(state, schedule, "start", None, "b" * 8, t0 + timedelta(seconds=1))
    assert state.deadline_reason == "start"
    assert state.deadline_at == t0 + timedelta(seconds=10)  # the oldest open start + grace
    _, runtime = apply_ping(state, schedule, "success", None, None, t0 + timedelta(seconds=3))
    assert runtime == 2000  # ended "b", the latest
    assert list(state.open_starts) == ["a" * 8]
    _, runtime = apply_ping(state, schedule, "exit", 0, "c" * 8, t0 + timedelta(seconds=4))
    assert runtime is None  # no start carried "c"
    _, runtime = apply_ping(state, schedule, "exit", 0, "a" * 8, t0 + timedelta(seconds=5))
    assert runtime == 5000
    assert state.open_starts == {}
    assert (state.deadline_reason, state.deadline_at) == ("late", t0 + timedelta(seconds=5 + 60 + 10))


def test_a_paused_monitor_is_never_late_and_resumes_from_the_resume() -> None:
    from core.heartbeats.schedule import Schedule, State, apply_ping, expire, set_deadline

    running = Schedule(interval=timedelta(seconds=60), grace=timedelta(seconds=10))
    paused = Schedule(interval=timedelta(seconds=60), grace=timedelta(seconds=10), paused=True)
    t0 = datetime.fromisoformat("2026-11-30T00:00:00+00:00")
    resumed = t0 + timedelta(hours=5)

    state = State()
    apply_ping(state, running, "success", None, None, t0)
    assert apply_ping(state, paused, "fail", None, None, t0 + timedelta(seconds=1)) == (None, None)
    assert state.status == "up"
    assert (state.deadline_at, state.deadline_reason) == (None, "paused")
    assert expire(state, paused, resumed) is None
    set_deadline(state, running, resumed)  # the first look after the resume
    assert state.deadline_at == resumed + timedelta(seconds=70)

    # A monitor still pending, whose first success came while it was paused.
    pending = State()
    apply_ping(pending, paused, "success", None, None, t0)
    assert pending.status == "pending"
    assert expire(pending, running, resumed) is None
    assert pending.deadline_at == resumed + timedelta(seconds=70)

    # A run started before the pause has its grace from the resume.
    started = State()
    apply_ping(started, running, "start", None, None, t0)
    set_deadline(started, paused, t0 + timedelta(seconds=1))
    assert expire(started, running, resumed) is None
    assert (started.deadline_reason, started.deadline_at) == ("start", resumed + timedelta(seconds=10))


def test_times_never_go_back() -> None:
    """A ping committed by another process after a later one changes no time backwards."""
    from core.heartbeats.schedule import Schedule, State, apply_ping

    schedule = Schedule(interval=timedelta(seconds=60), grace=timedelta(seconds=10))
    state = State()
    t0 = datetime.fromisoformat("2026-11-30T00:00:00+00:00")
    apply_ping(state, schedule, "success", None, None, t0 + timedelta(seconds=5))
    apply_ping(state, schedule, "success", None, None, t0)
    assert state.last_ping_at == state.last_success_at == state.counts_from == t0 + timedelta(seconds=5)
    assert state.deadline_at == t0 + timedelta(seconds=75)
