"""The observe command: migrate, admin create-user --print-token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, SQLITE_ONLY, Server, free_port, register


def _observe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_create_user_prints_a_working_owner_token(server: Server) -> None:
    result = _observe(
        "admin",
        "create-user",
        "--email",
        f"first-{os.getpid()}-{id(server)}@example.com",
        "--print-token",
        env=server.env,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert re.fullmatch(r"obs_[A-Za-z0-9_-]{43}", token)
    with server.client(token) as c:
        me = c.get("/api/v1/me").json()
    assert me["role"] == "owner"
    assert token not in result.stderr


@SQLITE_ONLY  # the same accounts code; prints_a_working_owner_token runs on both
def test_create_user_refuses_a_taken_email(server: Server) -> None:
    # Taken by a sign-up (a command's own account: test_create_user_prints_a_working_owner_token), rather
    # than by a first command: one process start less.
    email = register(server).email
    again = _observe("admin", "create-user", "--email", email, env=server.env)
    assert again.returncode == 1
    assert "CONFLICT" in again.stderr


@SQLITE_ONLY  # the same accounts code; prints_a_working_owner_token runs on both
def test_create_user_with_exist_ok_mints_a_token_for_the_account_there(server: Server) -> None:
    email = f"again-{os.getpid()}-{id(server)}@example.com"
    args = ("admin", "create-user", "--email", email, "--print-token", "--exist-ok")
    first, second = _observe(*args, env=server.env), _observe(*args, env=server.env)
    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    tokens = [first.stdout.strip(), second.stdout.strip()]
    assert tokens[0] != tokens[1]
    seen = []
    for token in tokens:
        with server.client(token) as c:
            me = c.get("/api/v1/me").json()
        seen.append((me["user"]["id"], me["org"]["id"], me["role"]))
    assert seen[0] == seen[1]
    assert seen[0][2] == "owner"


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    env = {**os.environ, "OBSERVE_DATA_DIR": str(tmp_path)}
    env.pop("OBSERVE_DATABASE_URL", None)
    for _ in range(2):
        result = _observe("migrate", env=env)
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
    assert (tmp_path / "observe.db").exists()


@pytest.mark.parametrize("port", ["0", "free"])
def test_links_name_the_port_really_served(tmp_path: Path, port: str) -> None:
    """OBSERVE_PUBLIC_URL unset: heartbeat URLs (and e-mailed links) name the
    address the server listens on, also for --http-port 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVE_")}
    env["OBSERVE_DATA_DIR"] = str(tmp_path / "data")
    flag = str(free_port()) if port == "free" else port
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--role", "api", "--http-port", flag, "--grpc-port", "0"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"REST  (http://127\.0\.0\.1:(\d+))/api/v1", log.read_text())):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        base, served = found.group(1), found.group(2)
        assert served != "0"
        if port == "free":
            assert served == flag
        persona = register(_Base(base))
        with persona.client() as c:
            hb = c.post("/api/v1/monitors", json={"name": "cron", "type": "heartbeat"})
            assert hb.status_code == 201, hb.text
            secrets = c.get(f"/api/v1/monitors/{hb.json()['id']}/secrets").json()
        assert secrets["heartbeatUrl"] == f"{base}/api/v1/heartbeats/{secrets['heartbeatToken']}"
    finally:
        process.terminate()
        process.wait(timeout=15)


class _Base:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
