"""The audit log answers "what did the agent do?"."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from sqlalchemy import delete, update
from sqlalchemy.exc import DBAPIError

from core.storage import tables as t
from tests.conftest import Persona, Server, register

AGENT_UA = "AeonitiBot/1.0"


def test_a_scripted_agent_session_reads_back_action_by_action(echo_server: Any) -> None:
    owner = register(echo_server)
    agent = owner.mint(name="agent", scopes=["monitors:write", "tokens:write"])
    headers = {"authorization": f"Bearer {agent['token']}", "user-agent": AGENT_UA}
    with echo_server.client() as c:
        rec = c.post("/api/v1/test/records", json={"text": "hello", "secret": "hunter2"}, headers=headers)
        assert rec.status_code == 201
        child = c.post("/api/v1/me/tokens", json={"name": "child", "scopes": ["monitors:write"]}, headers=headers)
        assert child.status_code == 201
        assert c.delete(f"/api/v1/me/tokens/{child.json()['id']}", headers=headers).status_code == 204
        # Refused calls change nothing and are not in the log.
        assert c.get("/api/v1/audit-logs", headers=headers).status_code == 403

    with owner.client() as c:
        r = c.get("/api/v1/audit-logs", params={"pat_id": agent["id"]})
    assert r.status_code == 200, r.text
    entries = r.json()["entries"]
    assert [e["action"] for e in entries] == ["REVOKE_TOKEN", "CREATE_TOKEN", "CREATE_RECORD"]
    for entry in entries:
        assert entry["actorPatId"] == agent["id"]
        assert entry["actorUserId"] == owner.user_id
        assert entry["actorEmail"] == owner.email
        assert entry["meta"]["ua"] == AGENT_UA
        assert entry["meta"]["ip"] == "127.0.0.1"
    revoke, create, record = entries
    assert record["meta"]["diff"]["secret"] == {"redacted": True}
    assert record["meta"]["diff"]["text"] == {"from": None, "to": "hello"}
    assert "hunter2" not in r.text
    assert create["resource"] == f"token:{child.json()['id']}"
    assert create["meta"]["diff"]["scopes"] == {"from": None, "to": ["monitors:write"]}
    assert child.json()["token"] not in r.text
    assert revoke["meta"]["snapshot"]["name"] == "child"
    assert revoke["meta"]["changedFields"][:2] == ["id", "name"]

    with owner.client() as c:
        exported = c.get("/api/v1/audit-logs", params={"pat_id": agent["id"], "format": "csv"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [row["id"] for row in rows] == [str(e["id"]) for e in entries]
    assert [row["action"] for row in rows] == [e["action"] for e in entries]
    assert all(row["actorPatId"] == str(agent["id"]) for row in rows)
    assert json.loads(rows[2]["diff"])["secret"] == {"redacted": True}


def test_sessions_are_logged_with_a_null_pat(owner: Persona) -> None:
    with owner.client(owner.session) as c:
        assert c.post("/api/v1/me/tokens", json={"name": "by-hand"}).status_code == 201
        entries = c.get("/api/v1/audit-logs", params={"action": "CREATE_TOKEN"}).json()["entries"]
    assert entries[0]["actorPatId"] is None
    assert entries[0]["meta"]["diff"]["name"]["to"] == "by-hand"


def test_filters_and_cursor_pagination(owner: Persona) -> None:
    for i in range(5):
        owner.mint(name=f"t{i}")
    seen: list[int] = []
    cursor = ""
    with owner.client() as c:
        while True:
            params: dict[str, Any] = {"action": "CREATE_TOKEN", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/api/v1/audit-logs", params=params).json()
            seen += [e["id"] for e in page["entries"]]
            cursor = page["nextCursor"]
            if not cursor:
                break
        assert len(seen) == 6  # the persona's own PAT and these 5
        assert seen == sorted(seen, reverse=True)
        none = c.get("/api/v1/audit-logs", params={"from": "2999-01-01T00:00:00Z"}).json()
        assert none == {"entries": [], "nextCursor": ""}
        bad = c.get("/api/v1/audit-logs", params={"limit": 0, "cursor": "!!"})
        assert {f["path"] for f in bad.json()["fields"]} == {"limit", "cursor"}


def test_other_orgs_entries_are_invisible(owner: Persona, outsider: Persona) -> None:
    owner.mint(name="private")
    with outsider.client() as c:
        entries = c.get("/api/v1/audit-logs").json()["entries"]
    assert all(e["actorUserId"] == outsider.user_id for e in entries)


def test_csv_cells_cannot_run_formulas(owner: Persona) -> None:
    owner.mint(name='=HYPERLINK("http://evil")')
    with owner.client() as c:
        text = c.get("/api/v1/audit-logs", params={"format": "csv", "action": "CREATE_TOKEN"}).text
    row = next(csv.DictReader(io.StringIO(text)))
    assert json.loads(row["diff"])["name"]["to"].startswith("=HYPERLINK")  # kept, but inert:
    for cell in row.values():
        assert not cell.startswith(("=", "+", "-", "@"))


def test_the_database_refuses_to_change_the_log(server: Server, owner: Persona) -> None:
    owner.mint(name="kept")
    with pytest.raises(DBAPIError, match="append-only"):
        server.sql(update(t.audit_logs).where(t.audit_logs.c.org_id == owner.org_id).values(action="NOTHING"))
    with pytest.raises(DBAPIError, match="append-only"):
        server.sql(delete(t.audit_logs).where(t.audit_logs.c.org_id == owner.org_id))


def test_a_change_and_its_audit_entry_commit_together(echo_server: Any) -> None:
    persona = register(echo_server)
    with echo_server.client(persona.pat) as c:
        ok = c.post("/api/v1/test/records", json={"text": "a", "countChecks": 5})
        assert ok.status_code == 201
        broken = c.post("/api/v1/test/records", json={"text": "b", "countChecks": 7, "breakAudit": True})
        assert (broken.status_code, broken.json()["code"]) == (500, "INTERNAL")
        # The 7 checks were written by the handler, then rolled back with the failed entry.
        assert c.get("/api/v1/me").json()["usage"]["monthlyChecks"] == 5
        actions = [e["action"] for e in c.get("/api/v1/audit-logs").json()["entries"]]
    assert actions.count("CREATE_RECORD") == 1


def test_an_audited_read_shows_who_read_what_and_no_change(owner: Persona) -> None:
    with owner.client() as c:
        created = c.post("/api/v1/monitors", json={"name": "read me", "type": "heartbeat"})
        assert created.status_code == 201, created.text
        monitor_id = created.json()["id"]
        assert c.get(f"/api/v1/monitors/{monitor_id}/secrets", headers={"user-agent": AGENT_UA}).status_code == 200
        assert c.get("/api/v1/me/webhook-secret", headers={"user-agent": AGENT_UA}).status_code == 200
        log = c.get("/api/v1/audit-logs").json()["entries"]
        exported = c.get("/api/v1/audit-logs", params={"format": "csv"}).text
    secrets, webhook = (
        next(e for e in log if e["action"] == a) for a in ("READ_MONITOR_SECRETS", "READ_WEBHOOK_SECRET")
    )
    assert secrets["resource"] == f"monitor:{monitor_id}"
    assert secrets["actorPatId"] == owner.pat_id
    for entry in (secrets, webhook):
        assert entry["meta"] == {"ip": "127.0.0.1", "ua": AGENT_UA}
    rows = {row["action"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert (rows["READ_MONITOR_SECRETS"]["changedFields"], rows["READ_MONITOR_SECRETS"]["diff"]) == ("", "{}")
