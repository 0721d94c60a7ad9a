"""Faults answered as CONTRACT.md says (input hygiene): database down or
disk full → 503 UNAVAILABLE with Retry-After, and /health/ready fails;
Redis unreachable or mute → per-process rate limits (logged, counted),
never none, and no call waits long for it; each recovers when the
dependency is back. Real processes throughout: a TCP proxy the test stops
or mutes in front of PostgreSQL and Redis, a full tmpfs under SQLite."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from observe.v1 import accounts_pb2, accounts_pb2_grpc
from sqlalchemy.engine import make_url

from tests.conftest import PASSWORD, PG_URL, REDIS_URL, Server, register, start_server, stop_server
from tests.faults import TcpProxy, fill, tmpfs
from tests.polling import wait_for

pytestmark = pytest.mark.slow  # each test starts a server of its own


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "UNAVAILABLE"
    assert int(r.headers["retry-after"]) >= 1


def ready(server: Server) -> httpx.Response:
    return httpx.get(f"{server.base_url}/health/ready", timeout=10)


def grpc_me(server: Server, token: str) -> grpc.StatusCode:
    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            accounts_pb2_grpc.MeServiceStub(channel).GetMe(
                accounts_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10
            )
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


# ---- PostgreSQL down ---------------------------------------------------------


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    if PG_URL is None:
        pytest.skip("needs OBSERVE_TEST_DATABASE_URL (CI sets it)")
    url = make_url(PG_URL)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    yield proxy
    proxy.close()


def test_postgresql_down_is_503_with_retry_after_and_not_ready_until_it_is_back(
    pg_proxy: TcpProxy, tmp_path: Path
) -> None:
    assert PG_URL
    url = make_url(PG_URL).set(host="127.0.0.1", port=pg_proxy.port).render_as_string(hide_password=False)
    srv = start_server(tmp_path, backend="postgresql", database_url=url)
    try:
        persona = register(srv)
        pg_proxy.down()
        with persona.client() as c:
            assert_unavailable(c.get("/api/v1/me"))
            assert_unavailable(c.get("/api/v1/monitors"))
            assert_unavailable(c.post("/api/v1/me/tokens", json={"name": "while down"}))
        with srv.client() as c:
            assert_unavailable(c.post("/api/v1/auth/login", json={"email": persona.email, "password": PASSWORD}))
            assert c.get("/health/live").status_code == 200
        assert grpc_me(srv, persona.pat) == grpc.StatusCode.UNAVAILABLE
        not_ready = ready(srv)
        assert_unavailable(not_ready)
        assert "database down" in not_ready.json()["error"]
        assert "unhandled error" not in srv.log()  # no 500 anywhere

        pg_proxy.up()
        wait_for(lambda: ready(srv).status_code == 200, "readiness after PostgreSQL is back")
        with persona.client() as c:
            assert c.get("/api/v1/me").status_code == 200
            assert c.post("/api/v1/me/tokens", json={"name": "after"}).status_code == 201
        assert grpc_me(srv, persona.pat) == grpc.StatusCode.OK
    finally:
        stop_server(srv)


# ---- SQLite on a full disk ---------------------------------------------------


def test_a_full_disk_under_sqlite_is_503_and_not_ready_until_space_is_freed(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data", size="16m") as data:
        if data is None:
            pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): no small disk to fill")
        srv = start_server(tmp_path, backend="sqlite", extra_env={"OBSERVE_DATA_DIR": str(data)})
        try:
            persona = register(srv)
            ballast = fill(data)
            not_ready = ready(srv)
            assert_unavailable(not_ready)
            assert "disk full" in not_ready.json()["error"]
            # Writes that still fit in pages SQLite already holds may pass;
            # the first that needs more space must be a 503, not a 500.
            with persona.client() as c:
                for n in range(500):
                    r = c.post("/api/v1/me/tokens", json={"name": f"filler {n} " + "x" * 90})
                    if r.status_code != 201:
                        break
                assert_unavailable(r)
                assert c.get("/api/v1/me").status_code in (200, 503)
            assert "unhandled error" not in srv.log()  # no 500 anywhere

            ballast.unlink()
            wait_for(lambda: ready(srv).status_code == 200, "readiness after space is freed")
            with persona.client() as c:
                assert c.post("/api/v1/me/tokens", json={"name": "after"}).status_code == 201
                assert c.get("/api/v1/me").status_code == 200
        finally:
            stop_server(srv)


# ---- Redis down or mute --------------------------------------------------------


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    if REDIS_URL is None:
        pytest.skip("needs OBSERVE_TEST_REDIS_URL (CI sets it)")
    url = urlsplit(REDIS_URL)
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 6379)
    yield proxy
    proxy.close()


def login(server: Server, source: str) -> int:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=server.base_url, transport=transport, timeout=30) as c:
        body = {"email": "nobody@example.com", "password": PASSWORD}
        return c.post("/api/v1/auth/login", json=body).status_code


def metric(server: Server, name: str) -> float:
    for line in httpx.get(f"{server.base_url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name}")


def test_redis_mute_or_down_keeps_per_process_limits_and_costs_little(redis_proxy: TcpProxy, tmp_path: Path) -> None:
    assert REDIS_URL
    env = {
        "OBSERVE_REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}{urlsplit(REDIS_URL).path}",
        "OBSERVE_RATE_LIMIT_PREFIX": f"faults-{uuid.uuid4().hex}",
        "OBSERVE_RATE_LIMIT_AUTH_IP": "3/minute",
    }
    srv = start_server(tmp_path, backend="sqlite", extra_env=env)
    try:
        persona = register(srv)
        assert ready(srv).json()["checks"]["redis"] == "ok"
        assert metric(srv, "observe_ratelimit_redis_up") == 1

        # A Redis that keeps its connections and never answers: calls go on
        # at their usual pace (the first waits one 250 ms timeout) ...
        redis_proxy.mute()
        with persona.client() as c:
            started = time.monotonic()
            for _ in range(20):
                assert c.get("/api/v1/me").status_code == 200
            assert time.monotonic() - started < 2.5
        # ... and limits hold, counted in this process: login's 3 per minute per IP.
        assert [login(srv, "127.0.0.6") for _ in range(4)] == [401, 401, 401, 429]
        degraded = ready(srv)
        assert degraded.status_code == 200
        assert degraded.json() == {
            "status": "degraded",
            "checks": {"database": "ok", "disk": "ok", "redis": "degraded"},
        }
        assert metric(srv, "observe_ratelimit_redis_up") == 0
        assert metric(srv, "observe_ratelimit_fallback_calls_total") >= 24
        assert metric(srv, "observe_ratelimit_redis_outages_total") == 1

        # Redis gone (refused): the same.
        redis_proxy.down()
        assert login(srv, "127.0.0.6") == 429
        assert [login(srv, "127.0.0.7") for _ in range(4)] == [401, 401, 401, 429]

        redis_proxy.up()

        def shared_again() -> bool:
            with persona.client() as c:
                c.get("/api/v1/me")
            return bool(ready(srv).json()["checks"]["redis"] == "ok")

        wait_for(shared_again, "Redis in use again")
        assert metric(srv, "observe_ratelimit_redis_up") == 1
        log = srv.log()
        assert log.count("rate-limit storage (Redis) unavailable") == 1
        assert "reachable again" in log
    finally:
        stop_server(srv)
