"""The incidents API: manual incidents, their timeline, acknowledgement,
resolution, postmortems, lists, and who may do what."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select

from core.incidents.tables import alert_outbox
from tests.conftest import Persona, Server, Team

BASE = "/api/v1/incidents"


def create(c: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("title", "Checkout is slow")
    r = c.post(BASE, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def error(r: httpx.Response) -> tuple[int, str, set[str]]:
    body = r.json()
    return r.status_code, body["code"], {f["path"] for f in body.get("fields", [])}


def test_a_manual_incident_from_open_to_postmortem(server: Server, owner: Persona) -> None:
    with owner.client() as c:
        inc = create(c, title="Checkout is slow", status="identified", message="Card payments time out")
        assert inc["monitorId"] is None
        assert inc["cause"] is None
        assert inc["status"] == "identified"
        assert inc["acknowledged"] is False
        assert inc["acknowledgedAt"] is None
        assert inc["acknowledgedBy"] is None
        assert inc["resolvedAt"] is None
        assert inc["postmortem"] is None
        assert inc["postmortemUpdatedAt"] is None
        assert inc["durationSec"] >= 0
        assert inc["deliveries"] == []
        assert [(u["status"], u["message"], u["authorUserId"]) for u in inc["updates"]] == [
            ("identified", "Card payments time out", owner.user_id)
        ]
        url = f"{BASE}/{inc['id']}"
        assert create(c)["updates"][0]["message"] == "Incident opened"  # the default first update

        r = c.post(f"{url}/updates", json={"status": "monitoring", "message": "Fix deployed"})
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "monitoring"
        assert r.json()["authorUserId"] == owner.user_id
        r = c.post(f"{url}/updates", json={"status": "monitoring", "message": "   "})
        assert error(r) == (400, "VALIDATION_FAILED", {"message"})

        # Acknowledging twice: 200 both times, the first acknowledger stays.
        session = owner.server.client(owner.session)
        first = c.post(f"{url}/acknowledge", json={})
        assert first.status_code == 200, first.text
        assert first.json()["acknowledgedBy"] == {"userId": owner.user_id, "patId": owner.pat_id}
        again = session.post(f"{url}/acknowledge", json={})
        assert again.status_code == 200, again.text
        assert again.json()["acknowledgedBy"] == {"userId": owner.user_id, "patId": owner.pat_id}
        assert again.json()["acknowledgedAt"] == first.json()["acknowledgedAt"]
        session.close()

        # Resolving twice: the second changes nothing.
        done = c.post(f"{url}/resolve", json={"message": "All good"})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "resolved"
        assert done.json()["resolvedAt"] is not None
        again = c.post(f"{url}/resolve", json={})
        assert again.status_code == 200
        assert again.json() == done.json()
        assert [u["status"] for u in again.json()["updates"]] == ["identified", "monitoring", "resolved"]

        # The postmortem is stored as written, up to 100 KB; "" clears it.
        text = "# What happened\n\n<script>alert('x')</script> & ünïcode \r\n  trailing  "
        r = c.put(f"{url}/postmortem", json={"markdown": text})
        assert r.status_code == 200, r.text
        assert r.json()["postmortem"] == text
        assert r.json()["postmortemUpdatedAt"] is not None
        assert c.get(url).json()["postmortem"] == text
        assert c.put(f"{url}/postmortem", json={"markdown": "x" * 102_400}).status_code == 200
        r = c.put(f"{url}/postmortem", json={"markdown": "é" * 51_201})  # 102,402 bytes
        assert error(r) == (400, "VALIDATION_FAILED", {"markdown"})
        r = c.put(f"{url}/postmortem", json={"markdown": ""})
        assert r.json()["postmortem"] is None
        assert r.json()["postmortemUpdatedAt"] is None

        # A resolved incident takes notes; an open status reopens it.
        r = c.post(f"{url}/updates", json={"status": "resolved", "message": "Postmortem to follow"})
        assert r.status_code == 201
        assert c.get(url).json()["resolvedAt"] == done.json()["resolvedAt"]
        r = c.post(f"{url}/updates", json={"status": "investigating", "message": "It is back"})
        assert r.status_code == 201
        reopened = c.get(url).json()
        assert reopened["status"] == "investigating"
        assert reopened["resolvedAt"] is None
        assert reopened["acknowledged"] is False
        assert reopened["acknowledgedBy"] is None

        entries = c.get("/api/v1/audit-logs", params={"pat_id": owner.pat_id}).json()["entries"]
    actions = {e["action"] for e in entries if e["resource"] == f"incident:{inc['id']}"}
    assert actions == {"CREATE_INCIDENT", "ADD_INCIDENT_UPDATE", "ACKNOWLEDGE_INCIDENT", "RESOLVE_INCIDENT",
                       "UPDATE_POSTMORTEM"}  # fmt: skip


def test_lists_filter_and_page_newest_first(server: Server, owner: Persona) -> None:
    with owner.client() as c:
        ids = [create(c, title=f"i{n}")["id"] for n in range(5)]
        c.post(f"{BASE}/{ids[1]}/resolve", json={})
        listed = c.get(BASE).json()
        assert [i["id"] for i in listed["incidents"]] == ids[::-1]
        assert listed["nextCursor"] == ""
        assert all(i["deliveries"] == [] and len(i["updates"]) >= 1 for i in listed["incidents"])
        assert [i["id"] for i in c.get(BASE, params={"status": "resolved"}).json()["incidents"]] == [ids[1]]
        assert ids[1] not in [i["id"] for i in c.get(BASE, params={"status": "open"}).json()["incidents"]]

        seen, cursor = [], ""
        while True:
            page = c.get(BASE, params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [i["id"] for i in page["incidents"]]
            cursor = page["nextCursor"]
            if not cursor:
                break
        assert seen == ids[::-1]

        started = c.get(f"{BASE}/{ids[0]}").json()["startedAt"]
        assert len(c.get(BASE, params={"from": started, "to": started}).json()["incidents"]) >= 1
        assert c.get(BASE, params={"from": "2999-01-01T00:00:00Z"}).json()["incidents"] == []
        assert c.get(BASE, params={"to": "2000-01-01T00:00:00Z"}).json()["incidents"] == []
        r = c.get(BASE, params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"})
        assert error(r) == (400, "VALIDATION_FAILED", {"from"})
        assert error(c.get(BASE, params={"cursor": "bm90b3Vycw"})) == (400, "VALIDATION_FAILED", {"cursor"})
        assert error(c.get(BASE, params={"status": "closed"}))[:2] == (400, "VALIDATION_FAILED")


def test_an_incident_about_a_monitor_queues_its_alerts(server: Server, owner: Persona, outsider: Persona) -> None:
    body = {"name": "shop", "type": "http", "url": "http://127.0.0.1:9/", "paused": True,
            "alertEmail": "oncall@example.com"}  # fmt: skip
    with owner.client() as c:
        r = c.post("/api/v1/monitors", json=body)
        assert r.status_code == 201, r.text
        monitor_id = r.json()["id"]
        inc = create(c, title="shop is down", monitorId=monitor_id)
        assert inc["monitorId"] == monitor_id
        # One open incident per monitor.
        assert error(c.post(BASE, json={"title": "again", "monitorId": monitor_id}))[:2] == (409, "CONFLICT")
        assert c.get(BASE, params={"monitorId": monitor_id}).json()["incidents"][0]["id"] == inc["id"]
        c.post(f"{BASE}/{inc['id']}/acknowledge", json={})
        c.post(f"{BASE}/{inc['id']}/acknowledge", json={})
        c.post(f"{BASE}/{inc['id']}/resolve", json={})
        c.post(f"{BASE}/{inc['id']}/resolve", json={})
        r = c.post(BASE, json={"title": "x", "monitorId": monitor_id + 10_000_000})
        assert error(r) == (400, "VALIDATION_FAILED", {"monitorId"})
    with outsider.client() as c:
        assert error(c.post(BASE, json={"title": "x", "monitorId": monitor_id})) == (
            400, "VALIDATION_FAILED", {"monitorId"})  # fmt: skip
    rows = server.sql(
        select(alert_outbox.c.event, alert_outbox.c.channel, alert_outbox.c.payload)
        .where(alert_outbox.c.incident_id == inc["id"])
        .order_by(alert_outbox.c.id)
    )
    assert [(r.event, r.channel) for r in rows] == [
        ("incident.opened", "email"), ("incident.acknowledged", "email"), ("incident.resolved", "email")]  # fmt: skip
    payload = json.loads(rows[0].payload)
    assert payload["incident"]["id"] == inc["id"]
    assert payload["incident"]["status"] == "investigating"
    assert payload["monitor"]["id"] == monitor_id
    assert "deliveries" in payload["incident"]
    assert json.loads(rows[2].payload)["incident"]["status"] == "resolved"


def test_incidents_stay_in_their_org_and_need_role_and_scope(server: Server, team: Team, outsider: Persona) -> None:
    with team.member.client() as c:
        inc = create(c)
    url = f"{BASE}/{inc['id']}"
    with outsider.client() as c:
        for r in (c.get(url), c.post(f"{url}/acknowledge", json={}), c.post(f"{url}/resolve", json={}),
                  c.post(f"{url}/updates", json={"status": "monitoring", "message": "m"}),
                  c.put(f"{url}/postmortem", json={"markdown": "m"})):  # fmt: skip
            assert error(r)[:2] == (404, "NOT_FOUND"), r.text
        assert inc["id"] not in [i["id"] for i in c.get(BASE).json()["incidents"]]
    with team.viewer.client() as c:
        assert c.get(url).status_code == 200
        assert error(c.post(f"{url}/acknowledge", json={}))[:2] == (403, "ROLE_INSUFFICIENT")
        assert error(c.post(BASE, json={"title": "t"}))[:2] == (403, "ROLE_INSUFFICIENT")
    reader = team.admin.mint(scopes=["incidents:read"])
    with team.admin.client(reader["token"]) as c:
        assert c.get(url).status_code == 200
        assert error(c.post(f"{url}/resolve", json={}))[:2] == (403, "PAT_SCOPE_INSUFFICIENT")
    with team.admin.client() as c:
        assert c.post(f"{url}/acknowledge", json={}).json()["acknowledgedBy"]["userId"] == team.admin.user_id
