"""The public JSON of a status page, by slug and by host: each component's
status (operational, down, maintenance, unknown) and daily history from the
rollups, the overall status, open and recent incidents with their public
timeline, active and upcoming maintenance; an unpublished page is 404;
changes show (a page edit at once, a monitor going down within seconds);
and nothing private of the fixture ever appears in the body."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from core.status_pages.tables import status_page_subscribers
from core.status_pages.uptime import Event, down_intervals, history, merged, minus
from core.storage import tables as t
from tests.conftest import Persona, Server
from tests.polling import wait_for
from tests.targets import Target, http_target

API = "/api/v1/status-pages"
PUBLIC = "/api/v1/status-pages/public"


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def created(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 201, r.text
    return dict(r.json())


def http_monitor(c: httpx.Client, name: str, target: Target, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "type": "http", "url": f"{target.url}/private-path", "intervalSec": 30,
            "timeoutMs": 1000, "failureThreshold": 1, **extra}  # fmt: skip
    return created(c.post("/api/v1/monitors", json=body))


def public(anon: httpx.Client, slug: str) -> dict[str, Any]:
    r = anon.get(f"{PUBLIC}/{slug}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def components(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {comp["name"]: comp for g in view["groups"] for comp in g["components"]}


def keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


class Fixture:
    """A page of four components with an incident of each kind, maintenance, a subscriber and secrets."""

    def __init__(self, server: Server, owner: Persona, good: Target, bad: Target) -> None:
        self.server, self.owner, self.good, self.bad = server, owner, good, bad
        self.secrets: list[str] = []
        tag = f"db{uuid.uuid4().hex[:6]}"
        with owner.client() as c:
            self.web = http_monitor(
                c, "internal-web-name", good,
                alertEmail="oncall-secret@example.com",
                alertSlackUrl="https://hooks.slack.com/services/T000/B000/slacksecret",
                alertWebhookUrl="https://hooks.example.net/webhook-secret-path",
                headers={"Authorization": "Bearer header-secret-value"},
            )  # fmt: skip
            self.pay = http_monitor(c, "internal-payments-name", bad)
            self.db = created(c.post("/api/v1/monitors", json={"name": "internal-db-name", "type": "heartbeat",
                                                                "tags": [tag]}))  # fmt: skip
            self.cron = created(c.post("/api/v1/monitors", json={"name": "Cron jobs", "type": "heartbeat",
                                                                  "paused": True}))  # fmt: skip
            self.token_urls = [c.get(f"/api/v1/monitors/{m['id']}/secrets").json()["heartbeatUrl"]
                               for m in (self.db, self.cron)]  # fmt: skip
            now = datetime.now(UTC)
            self.active = created(c.post("/api/v1/maintenance-windows", json={
                "name": "Database upgrade", "description": "Read-only meanwhile", "tags": [tag],
                "startsAt": iso(now - timedelta(hours=1)), "endsAt": iso(now + timedelta(hours=2))}))  # fmt: skip
            self.upcoming = created(c.post("/api/v1/maintenance-windows", json={
                "name": "Web deploy", "monitorIds": [self.web["id"]],
                "startsAt": iso(now + timedelta(days=2)),
                "endsAt": iso(now + timedelta(days=2, hours=1))}))  # fmt: skip
            self.manual = created(c.post("/api/v1/incidents", json={
                "title": "Slow checkouts", "status": "identified", "message": "Card payments time out"}))  # fmt: skip
            r = c.post(f"/api/v1/incidents/{self.manual['id']}/updates",
                       json={"status": "monitoring", "message": "Fix deployed"})  # fmt: skip
            assert r.status_code == 201, r.text
            self.domain = f"status-{uuid.uuid4().hex[:8]}.example.com"
            self.page = created(c.post(API, json={
                "name": "Acme status", "slug": f"acme-{uuid.uuid4().hex[:8]}", "customDomain": self.domain,
                "historyDays": 30,
                "groups": [
                    {"name": "Public", "components": [{"monitorId": self.web["id"], "displayName": "Website"},
                                                      {"monitorId": self.pay["id"], "displayName": "Payments"}]},
                    {"name": "Internal", "components": [{"monitorId": self.db["id"], "displayName": "Database"},
                                                        {"monitorId": self.cron["id"]}]},
                ]}))  # fmt: skip
        self.slug = self.page["slug"]
        self.subscriber = f"subscriber-{uuid.uuid4().hex[:6]}@example.com"
        server.sql(insert(status_page_subscribers).values(
            page_id=self.page["id"], org_id=owner.org_id, email=self.subscriber, confirmed=True,
            created_at=datetime.now(UTC)))  # fmt: skip
        self.secrets = [
            good.url,
            bad.url,
            "127.0.0.1",
            "private-path",
            f":{good.server.server_address[1]}",
            f":{bad.server.server_address[1]}",
            "oncall-secret",
            "slacksecret",
            "hooks.slack.com",
            "webhook-secret-path",
            "hooks.example.net",
            "header-secret-value",
            self.subscriber,
            "internal-web-name",
            "internal-payments-name",
            "internal-db-name",
            "HTTP 500",
            "expected",
            *[url.rsplit("/", 1)[1] for url in self.token_urls],
        ]


def assert_private(body: bytes, fx: Fixture, extra_ids: list[int]) -> None:
    text = body.decode()
    for secret in fx.secrets:
        assert secret not in text, f"{secret!r} leaked into the public JSON"
    found = keys(httpx.Response(200, content=body).json())
    assert not found & {"id", "monitorId", "incidentId", "url", "host", "cause", "email", "authorUserId"}, found
    for value in extra_ids:
        assert f'"id":{value}' not in text


@pytest.fixture
def targets() -> Iterator[tuple[Target, Target]]:
    """Two local HTTP targets: one answering 200, one 500."""
    with http_target() as good, http_target() as bad:
        bad.status = 500
        yield good, bad


def test_the_public_view_of_a_page(
    server: Server, owner: Persona, outsider: Persona, targets: tuple[Target, Target]
) -> None:
    good, bad = targets
    fx = Fixture(server, owner, good, bad)
    with outsider.client() as c:  # another org's incident is on none of these pages
        created(c.post("/api/v1/incidents", json={"title": "Their outage"}))
    for url in fx.token_urls[:1]:
        assert httpx.post(url, timeout=30).status_code == 200
    anon = server.client()
    ids = {m["id"] for m in (fx.web, fx.pay, fx.db, fx.cron)}

    def settled() -> dict[str, Any] | None:
        view = public(anon, fx.slug)
        comps = components(view)
        if comps["Website"]["status"] != "operational" or comps["Payments"]["status"] != "down":
            return None
        if not view["activeIncidents"] or len(view["activeIncidents"]) < 2:
            return None
        return view

    view = wait_for(settled, "web up, payments down, both incidents open", timeout=30, every=0.3)
    comps = components(view)
    assert [g["name"] for g in view["groups"]] == ["Public", "Internal"]
    assert list(comps) == ["Website", "Payments", "Database", "Cron jobs"]
    assert {n: c["status"] for n, c in comps.items()} == {
        "Website": "operational",
        "Payments": "down",
        "Database": "maintenance",
        "Cron jobs": "unknown",
    }
    assert view["status"] == "partial_outage"
    assert view["page"] == {"name": "Acme status", "slug": fx.slug, "description": None, "accentColor": None}
    today = datetime.now(UTC).date()
    for comp in comps.values():
        assert len(comp["days"]) == 30
        assert [d["date"] for d in comp["days"]] == [(today - timedelta(days=29 - i)).isoformat() for i in range(30)]
        assert set(comp["days"][0]) == {"date", "uptimePercent", "downtimeSec", "maintenanceSec"}
    assert comps["Database"]["days"][-1]["maintenanceSec"] > 0
    assert comps["Cron jobs"]["uptimePercent"] is None

    titles = [i["title"] for i in view["activeIncidents"]]
    assert sorted(titles) == ["Payments is down", "Slow checkouts"]
    manual = next(i for i in view["activeIncidents"] if i["title"] == "Slow checkouts")
    assert manual["components"] == []
    assert manual["status"] == "monitoring"
    assert manual["resolvedAt"] is None
    assert [(u["status"], u["message"]) for u in manual["updates"]] == [
        ("identified", "Card payments time out"),
        ("monitoring", "Fix deployed"),
    ]
    auto = next(i for i in view["activeIncidents"] if i["title"] == "Payments is down")
    assert auto["components"] == ["Payments"]
    assert auto["updates"]
    assert auto["durationSec"] >= 0
    assert "Their outage" not in str(view)

    assert [m["name"] for m in view["maintenance"]["active"]] == ["Database upgrade"]
    assert view["maintenance"]["active"][0]["components"] == ["Database"]
    assert view["maintenance"]["active"][0]["description"] == "Read-only meanwhile"
    assert [(m["name"], m["components"]) for m in view["maintenance"]["upcoming"]] == [("Web deploy", ["Website"])]
    assert view["updatedAt"].endswith("Z")

    by_host = anon.get(f"{PUBLIC}/by-host/{fx.domain}")
    assert by_host.status_code == 200
    assert by_host.json()["page"]["slug"] == fx.slug
    assert anon.get(f"{PUBLIC}/by-host/{fx.domain.upper()}").status_code == 200
    for body in (anon.get(f"{PUBLIC}/{fx.slug}").content, by_host.content):
        assert_private(body, fx, [*ids, fx.manual["id"], fx.page["id"]])

    with owner.client() as c:
        # A resolved incident moves to recentIncidents (the watcher sees it, or the page edit below).
        assert c.post(f"/api/v1/incidents/{fx.manual['id']}/resolve", json={"message": "All good"}).status_code == 200
        # A page edit shows at once.
        r = c.patch(f"{API}/{fx.page['id']}", json={"name": "Acme, renamed", "showMaintenance": False})
        assert r.status_code == 200, r.text
    view = public(anon, fx.slug)
    assert view["page"]["name"] == "Acme, renamed"
    assert view["maintenance"] == {"active": [], "upcoming": []}
    assert [i["title"] for i in view["recentIncidents"]] == ["Slow checkouts"]
    assert view["recentIncidents"][0]["updates"][-1] == {
        "status": "resolved",
        "message": "All good",
        "createdAt": view["recentIncidents"][0]["resolvedAt"],
    }

    # A status change shows within seconds (the watcher sees the event).
    good.status = 503
    wait_for(lambda: components(public(anon, fx.slug))["Website"]["status"] == "down", "website down",
             timeout=15, every=0.3)  # fmt: skip

    with owner.client() as c:
        assert c.patch(f"{API}/{fx.page['id']}", json={"published": False}).status_code == 200
    assert anon.get(f"{PUBLIC}/{fx.slug}").json()["code"] == "NOT_FOUND"
    assert anon.get(f"{PUBLIC}/by-host/{fx.domain}").status_code == 404
    assert anon.get(f"{PUBLIC}/no-such-page-{uuid.uuid4().hex[:6]}").status_code == 404
    anon.close()


def test_uptime_comes_from_the_daily_rollups(server: Server, owner: Persona) -> None:
    with owner.client() as c:
        m = created(c.post("/api/v1/monitors", json={"name": "hb", "type": "http", "url": "http://127.0.0.1:9/x",
                                                      "paused": True}))  # fmt: skip
        slug = f"rollups-{uuid.uuid4().hex[:8]}"
        group = {"name": "G", "components": [{"monitorId": m["id"]}]}
        page = created(c.post(API, json={"name": "R", "slug": slug, "historyDays": 7, "groups": [group]}))
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = [(midnight - timedelta(days=3), 200, 150), (midnight - timedelta(days=1), 100, 100),
            (midnight - timedelta(days=30), 100, 0)]  # fmt: skip
    server.sql(insert(t.check_rollups).values([
        {"monitor_id": m["id"], "level": 2, "bucket_start": start, "checks": checks, "up_checks": up, "timed": 0,
         "sum_ms": 0.0, "min_ms": None, "max_ms": None, "hist": "{}"} for start, checks, up in rows]))  # fmt: skip
    with server.client() as anon:
        with owner.client() as c:  # the rows went in behind the cache's back: a page edit clears it
            assert c.patch(f"{API}/{page['id']}", json={"description": "d"}).status_code == 200
        comp = wait_for(lambda: components(public(anon, slug))["hb"], "view")
    days = comp["days"]
    assert len(days) == 7
    assert [d["uptimePercent"] for d in days] == [None, None, None, 75.0, None, 100.0, None]
    assert comp["uptimePercent"] == round(100 * 250 / 300, 4)  # day -30 is outside the 7 days
    assert comp["status"] == "unknown"  # paused


def test_days_minus_maintenance_and_heartbeat_uptime() -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)
    h = timedelta(hours=1)
    events = [Event(day + 2 * h, "up"), Event(day + 10 * h, "down"), Event(day + 14 * h, "up"),
              Event(day + 26 * h, "down")]  # fmt: skip
    down = down_intervals(events, open_until=day + 30 * h)
    assert down == [(day + 10 * h, day + 14 * h), (day + 26 * h, day + 30 * h)]
    maintenance = merged([(day + 13 * h, day + 15 * h), (day + 12 * h, day + 14 * h)])
    assert maintenance == [(day + 12 * h, day + 15 * h)]
    assert minus(down, maintenance) == [(day + 10 * h, day + 12 * h), (day + 26 * h, day + 30 * h)]
    hist = history([day, day + 24 * h], day + 30 * h, down=down, maintenance=maintenance, rollups=None,
                   known_from=day + 2 * h)  # fmt: skip
    first, second = hist.days
    assert (first.date, first.downtime_sec, first.maintenance_sec) == ("2026-03-01", 2 * 3600, 3 * 3600)
    assert first.uptime_percent == round(100 * (19 - 2) / 19, 4)  # 22 h known, 3 h of it maintenance
    assert (second.downtime_sec, second.maintenance_sec, second.uptime_percent) == (4 * 3600, 0, round(100 * 2 / 6, 4))
    assert hist.uptime_percent == round(100 * (25 - 6) / 25, 4)
    never = history([day], day + 5 * h, down=[], maintenance=[], rollups=None, known_from=None)
    assert never.days[0].uptime_percent is None
    assert never.uptime_percent is None
