"""The observe command: migrate, admin create-user --print-token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, Server


def _observe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
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


def test_create_user_refuses_a_taken_email(server: Server) -> None:
    email = f"twice-{os.getpid()}-{id(server)}@example.com"
    assert _observe("admin", "create-user", "--email", email, env=server.env).returncode == 0
    again = _observe("admin", "create-user", "--email", email, env=server.env)
    assert again.returncode == 1
    assert "CONFLICT" in again.stderr


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    env = {**os.environ, "OBSERVE_DATA_DIR": str(tmp_path)}
    env.pop("OBSERVE_DATABASE_URL", None)
    for _ in range(2):
        result = _observe("migrate", env=env)
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
    assert (tmp_path / "observe.db").exists()
