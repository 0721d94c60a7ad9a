"""`observe serve --grpc-upstream`: the gateway alone, proxying to a remote
core over gRPC, answers exactly as the in-process gateway does.

The gateway holds no database: what it proxies is the same whatever the core
behind it stores in, so these run against the SQLite session server only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, SQLITE_ONLY, Server, register, start_server, stop_server


@pytest.fixture(scope="module")
def gateway(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        Path(tmp_path_factory.mktemp("gateway")), backend=server.backend, args=["--grpc-upstream", server.grpc_target]
    )
    yield srv
    stop_server(srv)


@SQLITE_ONLY
def test_same_answers_as_in_process(server: Server, gateway: Server) -> None:
    persona = register(server)
    for path in ("/api/v1/me", "/api/v1/me/tokens", "/api/v1/me/tokens?bogus=1", "/api/v1/nope"):
        with server.client(persona.pat) as direct, gateway.client(persona.pat) as proxied:
            a, b = direct.get(path), proxied.get(path)
        assert (a.status_code, a.json()) == (b.status_code, b.json()), path


@SQLITE_ONLY
def test_mutations_and_errors_pass_through(server: Server, gateway: Server) -> None:
    persona = register(gateway)
    with gateway.client(persona.pat) as c:
        bad = c.post("/api/v1/me/tokens", json={"name": "", "scopes": ["nope"]})
        assert bad.status_code == 400
        assert [f["path"] for f in bad.json()["fields"]] == ["name", "scopes[0]"]
        minted = c.post("/api/v1/me/tokens", json={"name": "via-gateway"})
        assert minted.status_code == 201
        assert c.delete(f"/api/v1/me/tokens/{minted.json()['id']}").status_code == 204
    with gateway.client(minted.json()["token"]) as c:
        assert c.get("/api/v1/me").json()["code"] == "TOKEN_INVALID"


@SQLITE_ONLY
def test_login_cookie_comes_back_through_the_proxy(gateway: Server) -> None:
    persona = register(gateway)
    with gateway.client() as c:
        r = c.post("/api/v1/auth/login", json={"email": persona.email, "password": PASSWORD})
        assert r.status_code == 200
        assert "observe_session=" in r.headers["set-cookie"]
        assert c.get("/api/v1/me").status_code == 200


@SQLITE_ONLY
def test_status_pages_through_the_proxy(server: Server, gateway: Server) -> None:
    """Web pages too: the Host of a custom domain, the password form of a
    locked page (an error that carries a page), the access cookie, headers."""
    persona = register(server)
    slug, domain = f"px-{uuid.uuid4().hex[:8]}", f"px-{uuid.uuid4().hex[:8]}.example.com"
    with server.client(persona.pat) as c:
        page = c.post("/api/v1/status-pages", json={"name": "Proxied", "slug": slug, "customDomain": domain}).json()
    with gateway.client() as c:
        by_host = c.get("/", headers={"host": domain, "accept-encoding": "gzip"})
        assert by_host.status_code == 200
        assert "Proxied" in by_host.text
        assert by_host.headers["content-encoding"] == "gzip"
        assert "default-src 'none'" in by_host.headers["content-security-policy"]
        assert c.get("/status/nope-nope").headers["content-type"].startswith("text/html")
    with server.client(persona.pat) as c:
        assert c.put(f"/api/v1/status-pages/{page['id']}/password", json={"password": "through it"}).is_success
    with gateway.client() as c:
        locked = c.get(f"/status/{slug}?utm_source=mail")
        assert (locked.status_code, locked.headers["x-error-code"]) == (401, "PASSWORD_REQUIRED")
        assert 'name="password"' in locked.text
        unlocked = c.post(f"/status/{slug}/unlock", data={"password": "through it"})
        assert unlocked.status_code == 303
        assert "observe_status_page=" in unlocked.headers["set-cookie"]
        cookie = unlocked.headers["set-cookie"].split(";", 1)[0]
        assert c.get(f"/status/{slug}", headers={"cookie": cookie}).status_code == 200


@SQLITE_ONLY
def test_ready_follows_the_upstream(gateway: Server) -> None:
    with gateway.client() as c:
        assert c.get("/health/ready").status_code == 200


def test_ready_is_503_when_the_upstream_is_down(tmp_path_factory: pytest.TempPathFactory) -> None:
    core = start_server(Path(tmp_path_factory.mktemp("core")), backend="sqlite")
    gw = start_server(Path(tmp_path_factory.mktemp("gw")), backend="sqlite", args=["--grpc-upstream", core.grpc_target])
    try:
        with gw.client() as c:
            assert c.get("/health/ready").status_code == 200
            stop_server(core)
            down = c.get("/health/ready")
            assert down.status_code == 503
            assert down.json()["code"] == "UNAVAILABLE"
            assert down.headers["retry-after"] == "5"
            assert c.get("/health/live").status_code == 200
            me = c.get("/api/v1/me", headers={"authorization": "Bearer obs_" + "A" * 43})
            assert (me.status_code, me.json()["code"]) == (503, "UNAVAILABLE")
    finally:
        stop_server(gw)
        if core.process.poll() is None:
            stop_server(core)
