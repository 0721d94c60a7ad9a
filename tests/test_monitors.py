"""The monitor API: the page's walkthrough run verbatim, strict validation,
the public projection, secrets (sealed at rest, read with an audit entry),
PATCH as a JSON merge, tags, paging, bulk calls all-or-nothing, safe targets,
heartbeat tokens, the plan's monitor cap, and gRPC with a FieldMask."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from observe.v1 import monitors_pb2, monitors_pb2_grpc
from sqlalchemy import select

from core.storage import tables as t
from tests.conftest import SQLITE_ONLY, Persona, Server, free_port, register, set_plan, start_server, stop_server

SLACK = "https://hooks.slack.com/services/T000/B000/SLACKSECRET"

# Copied from ../shared/spec/24observe-api.txt ("Walkthrough: create a monitor").
CURL = """curl -X POST https://api.24observe.com/api/v1/monitors \\
  -H 'Authorization: Bearer obs_...' \\
  -H "Idempotency-Key: $(uuidgen)" \\
  -H 'Content-Type: application/json' \\
  -d '{
    "name": "example.com homepage",
    "url": "https://example.com",
    "type": "https",
    "intervalSec": 60,
    "timeoutMs": 10000,
    "alertSlackUrl": "https://hooks.slack.com/services/..."
  }'"""

TYPESCRIPT = """import { randomUUID } from 'node:crypto';

const PAT = process.env.OBSERVE24_PAT!;

const res = await fetch('https://api.24observe.com/api/v1/monitors', {
  method: 'POST',
  headers: {
    authorization: `Bearer ${PAT}`,
    'idempotency-key': randomUUID(),
    'content-type': 'application/json',
  },
  body: JSON.stringify({
    name: 'example.com homepage',
    url: 'https://example.com',
    type: 'https',
    intervalSec: 60,
    timeoutMs: 10000,
    alertEmail: '[email protected]',
  }),
});

if (!res.ok) {
  const err = await res.json();
  // err.code: VALIDATION_FAILED / PLAN_LIMIT_MONITORS / PAT_SCOPE_INSUFFICIENT / ...
  // err.fields: [{ path, code, message }] when VALIDATION_FAILED
  throw new Error(`${res.status} ${err.code}: ${err.error}`);
}
const monitor = await res.json();
console.log('created monitor', monitor.id);
"""

PYTHON = """import os, uuid, httpx

PAT = os.environ['OBSERVE24_PAT']

r = httpx.post(
    'https://api.24observe.com/api/v1/monitors',
    headers={
        'authorization': f'Bearer {PAT}',
        'idempotency-key': str(uuid.uuid4()),
        'content-type': 'application/json',
    },
    json={
        'name': 'example.com homepage',
        'url': 'https://example.com',
        'type': 'https',
        'intervalSec': 60,
        'timeoutMs': 10000,
        'alertEmail': '[email protected]',
    },
)
r.raise_for_status()
print('created monitor', r.json()['id'])
"""


def local(example: str, server: Server, target: str) -> str:
    return example.replace("https://api.24observe.com", server.base_url).replace("https://example.com", target)


def create(c: Any, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "m")
    body.setdefault("type", "http")
    if body["type"] in ("http", "https", "keyword", "tls") and "url" not in body:
        body["url"] = "http://127.0.0.1:9/" if body["type"] in ("http", "keyword") else "https://127.0.0.1:9/"
    r = c.post("/api/v1/monitors", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


@pytest.fixture
def target_url() -> str:
    return f"https://127.0.0.1:{free_port()}"  # a local target; nothing listens, so checks fail (refused)


def test_the_walkthrough_curl_returns_the_projection_and_secrets_hold_the_url(
    owner: Persona, server: Server, target_url: str
) -> None:
    command = local(CURL, server, target_url).replace("obs_...", owner.pat)
    out = subprocess.run(
        ["bash", "-c", command + " -s -w '\\n%{http_code}'"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    body, _, status = out.rpartition("\n")
    assert status == "201", body
    monitor = json.loads(body)
    assert monitor["name"] == "example.com homepage"
    assert monitor["url"] == target_url
    assert monitor["type"] == "https"
    assert monitor["intervalSec"] == 60
    assert monitor["timeoutMs"] == 10000
    assert monitor["hasAlertSlack"] is True
    assert monitor["hasAlertEmail"] is False
    assert monitor["hasHeaders"] is False
    assert monitor["status"] in ("pending", "down")
    assert "alertSlackUrl" not in monitor
    assert "hooks.slack.com" not in body
    assert {"id", "status", "lastCheckedAt", "createdAt", "updatedAt", "hasAlertTelegram"} <= set(monitor)
    with owner.client() as c:
        secrets = c.get(f"/api/v1/monitors/{monitor['id']}/secrets").json()
        assert secrets["alertSlackUrl"] == "https://hooks.slack.com/services/..."
        assert secrets["heartbeatToken"] is None
        assert secrets["heartbeatUrl"] is None
        audit = c.get("/api/v1/audit-logs", params={"action": "READ_MONITOR_SECRETS"}).json()["entries"]
    assert audit[0]["resource"] == f"monitor:{monitor['id']}"
    assert audit[0]["actorPatId"] == owner.pat_id


def test_the_walkthrough_python_runs_verbatim(owner: Persona, server: Server, target_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", local(PYTHON, server, target_url)],
        env={**os.environ, "OBSERVE24_PAT": owner.pat},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    monitor_id = int(out.stdout.split()[-1])
    with owner.client() as c:
        monitor = c.get(f"/api/v1/monitors/{monitor_id}").json()
    assert monitor["hasAlertEmail"] is True
    assert monitor["alertEmail"] == "[email protected]"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npx") is None, reason="needs Node.js (npx) to run TypeScript")
@SQLITE_ONLY  # the page's TypeScript against the API: the same replies from either database
def test_the_walkthrough_typescript_runs_verbatim(
    owner: Persona, server: Server, target_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "walkthrough.mts"
    script.write_text(local(TYPESCRIPT, server, target_url))
    out = subprocess.run(
        ["npx", "--yes", "tsx@4", str(script)],
        env={**os.environ, "OBSERVE24_PAT": owner.pat},
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("created monitor ")


def test_the_page_validation_example_comes_back_exactly(owner: Persona) -> None:
    with owner.client() as c:
        r = c.post(
            "/api/v1/monitors", json={"name": "x", "type": "http", "url": "http://127.0.0.1/", "intervalSec": 45}
        )
    assert r.status_code == 400
    assert r.json()["code"] == "VALIDATION_FAILED"
    assert r.json()["fields"] == [
        {"path": "intervalSec", "code": "invalid_literal", "message": "Expected one of 30, 60, 300, 900, 1800, 3600"}
    ]


@pytest.fixture(scope="module")
def refused(server: Server) -> Persona:
    """One user for every case below (per backend): each body is refused, so the org stays empty (the test
    checks that) and no case sees another's; a sign-up per case would only add a password hash each."""
    return register(server)


@pytest.mark.parametrize(
    ("body", "path", "code"),
    [
        ({"type": "http", "url": "http://h/", "extra": 1}, "extra", "unrecognized_keys"),
        ({"type": "http", "url": "http://h/"}, "name", "required"),
        ({"name": "x" * 201, "type": "http", "url": "http://h/"}, "name", "too_big"),
        ({"name": "n", "url": "http://h/"}, "type", "required"),
        ({"name": "n", "type": "smtp", "url": "http://h/"}, "type", "invalid_enum_value"),
        ({"name": "n", "type": "http"}, "url", "required"),
        ({"name": "n", "type": "https", "url": "http://h/"}, "url", "invalid_string"),
        ({"name": "n", "type": "http", "url": "not a url"}, "url", "invalid_string"),
        ({"name": "n", "type": "http", "url": "http://h/", "timeoutMs": 999}, "timeoutMs", "too_small"),
        ({"name": "n", "type": "http", "url": "http://h/", "timeoutMs": 30001}, "timeoutMs", "too_big"),
        (
            {"name": "n", "type": "http", "url": "http://h/", "intervalSec": 30, "timeoutMs": 30000},
            "timeoutMs",
            "too_big",
        ),
        ({"name": "n", "type": "http", "url": "http://h/", "intervalSec": True}, "intervalSec", "invalid_type"),
        ({"name": "n", "type": "http", "url": "http://h/", "method": "FETCH"}, "method", "invalid_enum_value"),
        (
            {"name": "n", "type": "http", "url": "http://h/", "expectedStatus": "6xx"},
            "expectedStatus",
            "invalid_literal",
        ),
        (
            {"name": "n", "type": "http", "url": "http://h/", "expectedStatus": [200, 700]},
            "expectedStatus[1]",
            "too_big",
        ),
        ({"name": "n", "type": "http", "url": "http://h/", "keyword": "ok"}, "keyword", "custom"),
        ({"name": "n", "type": "keyword", "url": "http://h/"}, "keyword", "required"),
        ({"name": "n", "type": "tcp", "host": "h"}, "port", "required"),
        ({"name": "n", "type": "tcp", "host": "h", "port": 70000}, "port", "too_big"),
        ({"name": "n", "type": "tcp", "host": "bad host!", "port": 1}, "host", "invalid_string"),
        ({"name": "n", "type": "tcp", "host": "h", "port": 1, "regions": ["weur"]}, "regions", "custom"),
        ({"name": "n", "type": "http", "url": "http://h/", "regions": ["mars"]}, "regions[0]", "invalid_enum_value"),
        ({"name": "n", "type": "dns", "host": "h", "dnsRecordType": "XYZ"}, "dnsRecordType", "invalid_enum_value"),
        ({"name": "n", "type": "dns", "host": "h", "dnsResolver": "not-an-ip"}, "dnsResolver", "invalid_string"),
        ({"name": "n", "type": "tls", "url": "https://h/", "tlsExpiryDays": 0}, "tlsExpiryDays", "too_small"),
        ({"name": "n", "type": "heartbeat", "cron": "61 * * * *"}, "cron", "invalid_string"),
        ({"name": "n", "type": "heartbeat", "timezone": "Mars/Base"}, "timezone", "invalid_string"),
        ({"name": "n", "type": "http", "url": "http://h/", "failureThreshold": 11}, "failureThreshold", "too_big"),
        ({"name": "n", "type": "http", "url": "http://h/", "recoveryThreshold": 0}, "recoveryThreshold", "too_small"),
        ({"name": "n", "type": "http", "url": "http://h/", "tags": ["Bad Tag"]}, "tags[0]", "invalid_string"),
        ({"name": "n", "type": "http", "url": "http://h/", "tags": [f"t{i}" for i in range(21)]}, "tags", "too_big"),
        (
            {"name": "n", "type": "http", "url": "http://h/", "alertEmail": "a@b\nBcc: x"},
            "alertEmail",
            "invalid_string",
        ),
        (
            {"name": "n", "type": "http", "url": "http://h/", "alertSlackUrl": "ftp://x"},
            "alertSlackUrl",
            "invalid_string",
        ),
        (
            {"name": "n", "type": "http", "url": "http://h/", "alertTelegramBotToken": "123456:" + "A" * 35},
            "alertTelegramChatId",
            "required",
        ),
        (
            {"name": "n", "type": "http", "url": "http://h/", "headers": {"Bad Name": "v"}},
            "headers.Bad Name",
            "invalid_string",
        ),
        ({"name": "n", "type": "https", "url": "https://user:pass@h/"}, "url", "invalid_string"),
        (
            {"name": "n", "type": "dns", "host": "h", "dnsResolver": "resolver.example:53"},
            "dnsResolver",
            "invalid_string",
        ),
        ({"name": " \t ", "type": "http", "url": "http://h/"}, "name", "invalid_string"),
        ({"name": "n\u0000", "type": "http", "url": "http://h/"}, "name", "invalid_string"),
        ({"name": "n", "type": "http", "url": "http://h/", "tags": ["ok", "a\u0000"]}, "tags[1]", "invalid_string"),
        (
            {"name": "n", "type": "http", "url": "http://h/", "headers": {"X": "a\r\nInjected: 1"}},
            "headers.X",
            "invalid_string",
        ),
    ],
)
def test_every_rule_has_a_field_error(refused: Persona, body: dict[str, Any], path: str, code: str) -> None:
    with refused.client() as c:
        r = c.post("/api/v1/monitors", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "VALIDATION_FAILED"
        assert (path, code) in {(f["path"], f["code"]) for f in r.json()["fields"]}, r.json()
        assert c.get("/api/v1/monitors").json()["monitors"] == [] or all(
            m["name"] != body.get("name") or body.get("name") == "m"
            for m in c.get("/api/v1/monitors").json()["monitors"]
        )


def test_defaults_and_every_type_is_accepted(owner: Persona) -> None:
    with owner.client() as c:
        http = create(c, type="http")
        assert (http["intervalSec"], http["timeoutMs"], http["failureThreshold"], http["recoveryThreshold"]) == (
            60, 10000, 2, 1
        )  # fmt: skip
        assert http["regions"] == ["local"]
        assert http["method"] == "GET"
        assert http["expectedStatus"] is None
        assert create(c, type="https", expectedStatus="2xx")["expectedStatus"] == "2xx"
        assert create(c, type="keyword", keyword="ok", keywordInverted=True)["keywordInverted"] is True
        assert create(c, type="tcp", host="127.0.0.1", port=5432)["port"] == 5432
        dns = create(c, type="dns", host="example.com", dnsRecordType="MX", dnsResolver="127.0.0.1:5353")
        assert dns["dnsRecordType"] == "MX"
        assert dns["dnsResolver"] == "127.0.0.1:5353"
        assert create(c, type="tls")["tlsExpiryDays"] == 14
        assert create(c, type="ping", host="127.0.0.1")["host"] == "127.0.0.1"
        hb = create(c, type="heartbeat", cron="*/5 * * * *", timezone="Europe/Paris", graceSec=120)
        assert (hb["cron"], hb["timezone"], hb["graceSec"]) == ("*/5 * * * *", "Europe/Paris", 120)
        assert create(c, type="http", expectedStatus=[200, 204])["expectedStatus"] == [200, 204]


def test_secrets_are_sealed_at_rest_and_absent_from_projections(owner: Persona, server: Server) -> None:
    token = "987654:" + "T" * 35
    with owner.client() as c:
        m = create(
            c,
            headers={"X-Api-Key": "header-secret-value"},
            alertSlackUrl=SLACK,
            alertWebhookUrl="https://hooks.example.net/secret-path",
            alertDiscordUrl="https://discord.com/api/webhooks/secret",
            alertTelegramBotToken=token,
            alertTelegramChatId="-1001234",
            alertEmail="ops@example.com",
        )
        listed = c.get("/api/v1/monitors").text
        one = c.get(f"/api/v1/monitors/{m['id']}").text
        secrets = c.get(f"/api/v1/monitors/{m['id']}/secrets").json()
        audit = c.get("/api/v1/audit-logs", params={"action": "CREATE_MONITOR"}).text
    plain = ("header-secret-value", "SLACKSECRET", "secret-path", "webhooks/secret", token, "-1001234")
    for text in (listed, one, audit, json.dumps(m)):
        assert_no_secret(text, *plain)
    assert all(m[k] for k in ("hasHeaders", "hasAlertSlack", "hasAlertWebhook", "hasAlertDiscord", "hasAlertTelegram"))
    assert secrets["headers"] == {"X-Api-Key": "header-secret-value"}
    assert secrets["alertSlackUrl"] == SLACK
    assert secrets["alertTelegramBotToken"] == token
    assert secrets["alertTelegramChatId"] == "-1001234"
    (row,) = server.sql(select(t.monitors.c.settings, t.monitors.c.secrets).where(t.monitors.c.id == m["id"]))
    assert_no_secret(row.settings + row.secrets, *plain)
    assert row.secrets.startswith("v1.")
    assert server.log().count("header-secret-value") == 0


def test_patch_is_a_merge_and_null_clears(owner: Persona) -> None:
    with owner.client() as c:
        m = create(c, alertSlackUrl=SLACK, tags=["a"], timeoutMs=5000)
        r = c.patch(f"/api/v1/monitors/{m['id']}", json={"intervalSec": 300, "timeoutMs": 10000})
        assert r.status_code == 200, r.text
        patched = r.json()
        assert (patched["intervalSec"], patched["timeoutMs"], patched["tags"]) == (300, 10000, ["a"])
        assert patched["hasAlertSlack"] is True
        assert patched["updatedAt"] >= m["updatedAt"]
        cleared = c.patch(f"/api/v1/monitors/{m['id']}", json={"alertSlackUrl": None, "tags": []}).json()
        assert cleared["hasAlertSlack"] is False
        assert cleared["tags"] == []
        assert c.patch(f"/api/v1/monitors/{m['id']}", json={"timeoutMs": 30000}).status_code == 200
        bad = c.patch(f"/api/v1/monitors/{m['id']}", json={"intervalSec": 30})
        assert bad.status_code == 400
        assert bad.json()["fields"][0]["path"] == "timeoutMs"
        assert c.get(f"/api/v1/monitors/{m['id']}").json()["intervalSec"] == 300
        retyped = c.patch(f"/api/v1/monitors/{m['id']}", json={"type": "tcp", "host": "127.0.0.1", "port": 22})
        assert retyped.status_code == 200, retyped.text
        assert retyped.json()["url"] is None
        assert retyped.json()["method"] is None
        assert c.patch(f"/api/v1/monitors/{m['id']}", json={"keyword": "x"}).json()["fields"][0]["code"] == "custom"
        entries = c.get("/api/v1/audit-logs", params={"action": "UPDATE_MONITOR"}).json()["entries"]
    first = next(e for e in entries if e["meta"]["changedFields"] == ["intervalSec", "timeoutMs"])
    assert first["meta"]["diff"]["intervalSec"] == {"from": 60, "to": 300}
    assert first["resource"] == f"monitor:{m['id']}"
    clearing = next(e for e in entries if "alertSlackUrl" in e["meta"]["changedFields"])
    assert clearing["meta"]["diff"]["alertSlackUrl"] == {"redacted": True}


def test_tag_filter_is_and_and_the_list_pages(owner: Persona) -> None:
    with owner.client() as c:
        both = create(c, tags=["prod", "eu"])
        create(c, tags=["prod"])
        create(c, tags=["eu"])
        r = c.get("/api/v1/monitors", params=[("tag", "prod"), ("tag", "eu")])
        assert [m["id"] for m in r.json()["monitors"]] == [both["id"]]
        assert len(c.get("/api/v1/monitors", params={"tag": "prod"}).json()["monitors"]) == 2
        assert c.get("/api/v1/monitors", params={"tag": "BAD TAG"}).status_code == 400
        seen, cursor = [], ""
        while True:
            page = c.get("/api/v1/monitors", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [m["id"] for m in page["monitors"]]
            cursor = page["nextCursor"]
            if not cursor:
                break
        assert seen == sorted(seen)
        assert len(seen) == len(set(seen)) == 3
        assert c.get("/api/v1/monitors", params={"cursor": "garbage!"}).status_code == 400


def test_bulk_calls_are_all_or_nothing(owner: Persona) -> None:
    good = {"name": "b", "type": "http", "url": "http://127.0.0.1:9/"}
    with owner.client() as c:
        r = c.post("/api/v1/monitors/bulk", json={"monitors": [good] * 3 + [{**good, "intervalSec": 45}, good]})
        assert r.status_code == 400
        assert r.json()["fields"] == [
            {
                "path": "monitors[3].intervalSec",
                "code": "invalid_literal",
                "message": "Expected one of 30, 60, 300, 900, 1800, 3600",
            }
        ]
        assert c.get("/api/v1/monitors").json()["monitors"] == []
        over = c.post("/api/v1/monitors/bulk", json={"monitors": [good] * 101})
        assert (over.status_code, over.json()["code"]) == (400, "BULK_LIMIT_EXCEEDED")
        created = c.post("/api/v1/monitors/bulk", json={"monitors": [{**good, "paused": True}] * 100})
        assert created.status_code == 201, created.text
        ids = [m["id"] for m in created.json()["monitors"]]
        entry = c.get("/api/v1/audit-logs", params={"action": "BULK_CREATE_MONITORS"}).json()["entries"][0]
        assert entry["resource"] == "monitors:bulk"
        assert entry["meta"]["diff"]["ids"]["to"] == ids
        patched = c.patch("/api/v1/monitors/bulk", json={"ids": ids, "patch": {"paused": True, "tags": ["bulk"]}})
        assert patched.status_code == 200, patched.text
        assert all(m["paused"] and m["status"] == "paused" for m in patched.json()["monitors"])
        bad_patch = c.patch("/api/v1/monitors/bulk", json={"ids": ids, "patch": {"timeoutMs": 5}})
        assert bad_patch.json()["fields"] == [
            {"path": "patch.timeoutMs", "code": "too_small", "message": "Must be at least 1000"}
        ]
        missing = c.request("DELETE", "/api/v1/monitors/bulk", json={"ids": [*ids[:99], 999999]})
        assert missing.status_code == 404
        assert len(c.get("/api/v1/monitors").json()["monitors"]) == 100
        gone = c.request("DELETE", "/api/v1/monitors/bulk", json={"ids": ids})
        assert gone.status_code == 204
        assert c.get("/api/v1/monitors").json()["monitors"] == []


def test_heartbeat_token_rotation(owner: Persona, server: Server) -> None:
    with owner.client() as c:
        hb = create(c, type="heartbeat")
        first = c.get(f"/api/v1/monitors/{hb['id']}/secrets").json()
        assert first["heartbeatToken"].startswith("hb_")
        assert first["heartbeatUrl"] == f"{server.base_url}/api/v1/heartbeats/{first['heartbeatToken']}"
        rotated = c.post(f"/api/v1/monitors/{hb['id']}/rotate-heartbeat-token")
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["heartbeatToken"] not in (None, first["heartbeatToken"])
        assert (
            c.get(f"/api/v1/monitors/{hb['id']}/secrets").json()["heartbeatToken"] == rotated.json()["heartbeatToken"]
        )
        http = create(c)
        assert c.post(f"/api/v1/monitors/{http['id']}/rotate-heartbeat-token").status_code == 404
        audit = c.get("/api/v1/audit-logs", params={"action": "ROTATE_HEARTBEAT_TOKEN"}).text
    assert first["heartbeatToken"] not in audit
    assert rotated.json()["heartbeatToken"] not in audit


def test_delete_removes_the_monitor_and_audits_a_redacted_snapshot(owner: Persona) -> None:
    with owner.client() as c:
        m = create(c, alertSlackUrl=SLACK)
        assert c.delete(f"/api/v1/monitors/{m['id']}").status_code == 204
        assert c.get(f"/api/v1/monitors/{m['id']}").status_code == 404
        assert c.delete(f"/api/v1/monitors/{m['id']}").status_code == 404
        entry = c.get("/api/v1/audit-logs", params={"action": "DELETE_MONITOR"}).json()["entries"][0]
    assert entry["meta"]["snapshot"]["name"] == "m"
    assert entry["meta"]["snapshot"]["alertSlackUrl"] == {"redacted": True}


def test_ids_are_never_reused_after_a_delete_or_across_orgs(owner: Persona, outsider: Persona) -> None:
    with owner.client() as c:
        first = create(c)
        assert c.delete(f"/api/v1/monitors/{first['id']}").status_code == 204
        second = create(c)
        assert second["id"] > first["id"]
        assert c.delete(f"/api/v1/monitors/{second['id']}").status_code == 204
    with outsider.client() as c:
        elsewhere = create(c)
    assert elsewhere["id"] > second["id"]


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """OBSERVE_ALLOW_PRIVATE_TARGETS unset: the default a public install runs with."""
    srv = start_server(
        tmp_path_factory.mktemp("strict"),
        backend="sqlite",
        extra_env={"OBSERVE_ALLOW_PRIVATE_TARGETS": "false", "OBSERVE_PLANS": json.dumps({"tiny": {"monitors": 2}})},
    )
    yield srv
    stop_server(srv)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "http://127.0.0.1/"),
        ("url", "http://localhost:8080/"),
        ("url", "http://[::1]/"),
        ("url", "http://[::ffff:127.0.0.1]/"),
        ("url", "http://169.254.169.254/latest/meta-data/"),
        ("url", "http://10.1.2.3/"),
        ("url", "http://100.64.0.1/"),
        ("url", "http://app.localhost/"),
        ("alertWebhookUrl", "http://192.168.1.10/hook"),
    ],
)
def test_private_targets_are_refused_by_default(strict_server: Server, field: str, value: str) -> None:
    persona = register(strict_server)
    body = {"name": "n", "type": "http", "url": "http://example.com/", field: value}
    with persona.client() as c:
        r = c.post("/api/v1/monitors", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "TARGET_NOT_ALLOWED"
        assert r.json()["fields"][0]["path"] == field
        assert c.get("/api/v1/monitors").json()["monitors"] == []
        ok = create(c, url="http://example.com/")
        patched = c.patch(f"/api/v1/monitors/{ok['id']}", json={field: value})
        assert patched.json()["code"] == "TARGET_NOT_ALLOWED"


def test_tcp_and_ping_hosts_are_target_checked(strict_server: Server) -> None:
    persona = register(strict_server)
    with persona.client() as c:
        for body in ({"type": "tcp", "host": "127.0.0.1", "port": 22}, {"type": "ping", "host": "::1"}):
            r = c.post("/api/v1/monitors", json={"name": "n", **body})
            assert (r.status_code, r.json()["code"]) == (400, "TARGET_NOT_ALLOWED"), r.text


def test_the_plan_caps_the_monitor_count(strict_server: Server) -> None:
    persona = register(strict_server)
    assert set_plan(strict_server, persona.org_id, "tiny").returncode == 0
    good = {"name": "n", "type": "http", "url": "http://example.com/", "paused": True}
    with persona.client() as c:
        assert c.post("/api/v1/monitors", json=good).status_code == 201
        over = c.post("/api/v1/monitors/bulk", json={"monitors": [good, good]})
        assert (over.status_code, over.json()["code"]) == (402, "PLAN_LIMIT_MONITORS")
        assert c.post("/api/v1/monitors", json=good).status_code == 201
        third = c.post("/api/v1/monitors", json=good)
        assert (third.status_code, third.json()["code"]) == (402, "PLAN_LIMIT_MONITORS")
        assert c.get("/api/v1/me").json()["usage"]["monitors"] == 2


def test_grpc_update_with_a_field_mask(owner: Persona, server: Server) -> None:
    with owner.client() as c:
        m = create(c, alertSlackUrl=SLACK, timeoutMs=5000)
    md = [("authorization", f"Bearer {owner.pat}")]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = monitors_pb2_grpc.MonitorServiceStub(channel)
        reply = stub.UpdateMonitor(
            monitors_pb2.UpdateMonitorRequest(
                id=m["id"],
                monitor=monitors_pb2.MonitorInput(name="renamed", interval_sec=300),
                update_mask=field_mask_pb2.FieldMask(paths=["name", "alert_slack_url"]),
            ),
            metadata=md,
        )
        # interval_sec is not in the mask: unchanged; alert_slack_url is, and unset: cleared.
        assert reply.monitor.name == "renamed"
        assert reply.monitor.interval_sec == 60
        assert reply.monitor.has_alert_slack is False
        with pytest.raises(grpc.RpcError) as err:
            stub.GetMonitor(monitors_pb2.GetMonitorRequest(id=999999), metadata=md)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
