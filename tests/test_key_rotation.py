"""Rotating the server key: a new key in front of OBSERVE_SECRET_KEYS opens
old secrets, ``observe admin reseal`` seals them all again with it, and the
old key can then be dropped."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from core.storage import tables as t
from tests.conftest import ROOT, register, start_server, stop_server

K1 = "k1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
K2 = "k2:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
SLACK = "https://hooks.slack.com/services/rotate/me"


def test_rotate_reseal_and_drop_the_old_key(tmp_path: Path) -> None:
    env = {"OBSERVE_DATA_DIR": str(tmp_path / "data"), "OBSERVE_ALLOW_PRIVATE_TARGETS": "true"}
    srv = start_server(tmp_path, backend="sqlite", extra_env={**env, "OBSERVE_SECRET_KEYS": K1})
    try:
        owner = register(srv)
        with owner.client() as c:
            body = {"name": "n", "type": "heartbeat", "alertSlackUrl": SLACK, "paused": True}
            monitor_id = c.post("/api/v1/monitors", json=body).json()["id"]
            token = c.get(f"/api/v1/monitors/{monitor_id}/secrets").json()["heartbeatToken"]
            c.post("/api/v1/me/webhook-secret/rotate")
            webhook = c.get("/api/v1/me/webhook-secret").json()
    finally:
        stop_server(srv)

    def sealed_with() -> set[str]:
        rows = srv.sql(select(t.monitors.c.secrets, t.monitors.c.heartbeat_token))
        rows += srv.sql(
            select(t.orgs.c.webhook_secret, t.orgs.c.webhook_secret).where(t.orgs.c.webhook_secret.is_not(None))
        )
        return {value.split(".")[1] for row in rows for value in row}

    assert sealed_with() == {"k1"}
    both = {**env, "OBSERVE_SECRET_KEYS": f"{K2},{K1}"}
    out = subprocess.run(
        [sys.executable, "-m", "core.cli", "admin", "reseal"],
        cwd=ROOT,
        env={**os.environ, **both},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("3 secrets sealed again with key 'k2'"), out.stdout
    assert sealed_with() == {"k2"}

    srv = start_server(tmp_path, backend="sqlite", extra_env={**env, "OBSERVE_SECRET_KEYS": K2})
    try:
        with srv.client(owner.pat) as c:
            secrets = c.get(f"/api/v1/monitors/{monitor_id}/secrets").json()
            assert secrets["alertSlackUrl"] == SLACK
            assert secrets["heartbeatToken"] == token
            assert c.get("/api/v1/me/webhook-secret").json() == webhook
    finally:
        stop_server(srv)
