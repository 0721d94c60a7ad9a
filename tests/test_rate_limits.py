"""Request-rate limits: RateLimit-* headers, 429 RATE_LIMITED with
Retry-After, per token and per IP; shared through Redis between processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, REDIS_URL, ROOT, Server, start_server, stop_server

TIGHT = {
    "OBSERVE_RATE_LIMIT_TOKEN": "5/minute",
    "OBSERVE_RATE_LIMIT_AUTH_IP": "3/minute",
    "OBSERVE_RATE_LIMIT_UNLOCK_IP": "3/hour",
    "OBSERVE_RATE_LIMIT_SUBSCRIBE_IP": "2/hour",
}


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path, backend="sqlite", extra_env=TIGHT)
    yield srv
    stop_server(srv)


def _owner_token(data_dir: Path, env: dict[str, str]) -> str:
    email = f"rl-{uuid.uuid4().hex[:8]}@example.com"
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", "admin", "create-user", "--email", email, "--print-token"],
        cwd=ROOT, env={**env, "OBSERVE_DATA_DIR": str(data_dir)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def test_per_token_limit_with_headers(tight: Server) -> None:
    token = _owner_token(tight.data_dir, tight.env)
    with tight.client(token) as c:
        remaining = []
        for _ in range(5):
            r = c.get("/api/v1/me")
            assert r.status_code == 200
            assert r.headers["ratelimit-limit"] == "5"
            remaining.append(int(r.headers["ratelimit-remaining"]))
            assert 1 <= int(r.headers["ratelimit-reset"]) <= 60
        assert remaining == [4, 3, 2, 1, 0]
        refused = c.get("/api/v1/me")
    assert refused.status_code == 429
    assert refused.json()["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-remaining"] == "0"


def test_auth_routes_are_limited_per_ip(tight: Server) -> None:
    with tight.client() as c:
        codes = [
            c.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}).status_code
            for _ in range(4)
        ]
    assert codes == [401, 401, 401, 429]


def test_status_page_unlock_and_subscribe_are_limited_per_ip_apart(tight: Server) -> None:
    token = _owner_token(tight.data_dir, tight.env)
    slug = f"rl-{uuid.uuid4().hex[:8]}"
    with tight.client(token) as c:
        r = c.post("/api/v1/status-pages", json={"name": "Locked", "slug": slug, "groups": []})
        assert r.status_code == 201, r.text
        assert c.put(f"/api/v1/status-pages/{r.json()['id']}/password", json={"password": "guess me not"}).is_success
    public = f"/api/v1/status-pages/public/{slug}"
    with tight.client() as anon:
        guesses = [
            anon.post(f"{public}/unlock", json={"password": "guess"}).status_code,
            anon.post(f"/status/{slug}/unlock", data={"password": "guess"}).status_code,  # the HTML form counts too
            anon.post(f"{public}/unlock", json={"password": "guess"}).status_code,
        ]
        refused = anon.post(f"{public}/unlock", json={"password": "guess me not"})
        # Subscribing counts apart (a locked page refuses it, but only after the limit).
        subscribes = [anon.post(f"{public}/subscribe", json={"email": "a@example.com"}).status_code for _ in range(3)]
    assert guesses == [401, 401, 401]
    assert (refused.status_code, refused.json()["code"]) == (429, "RATE_LIMITED")
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert subscribes == [401, 401, 429]


@pytest.mark.skipif(REDIS_URL is None, reason="needs OBSERVE_TEST_REDIS_URL (CI sets it)")
def test_two_processes_share_one_limit_through_redis(tmp_path: Path) -> None:
    assert REDIS_URL
    env = {**TIGHT, "OBSERVE_REDIS_URL": REDIS_URL, "OBSERVE_RATE_LIMIT_PREFIX": f"test-{uuid.uuid4().hex}"}
    data = tmp_path / "shared"
    a = start_server(tmp_path / "a", backend="sqlite", extra_env={**env, "OBSERVE_DATA_DIR": str(data)})
    b = start_server(tmp_path / "b", backend="sqlite", extra_env={**env, "OBSERVE_DATA_DIR": str(data)})
    try:
        token = _owner_token(data, {k: v for k, v in os.environ.items() if k != "OBSERVE_DATABASE_URL"})
        statuses = []
        for i in range(8):
            with (a if i % 2 == 0 else b).client(token) as c:
                statuses.append(c.get("/api/v1/me").status_code)
        assert statuses == [200] * 5 + [429] * 3
    finally:
        stop_server(a)
        stop_server(b)
