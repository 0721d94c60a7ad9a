"""The Atom feed of a status page, as a feed reader (feedparser) reads it:
served at the three routes as application/atom+xml, valid Atom with the
page's title, each incident an entry with its timeline, maintenance listed,
ids stable and showing no id in clear, and any text (``<``, ``&``, quotes,
characters XML cannot carry) shown as written."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser  # type: ignore[import-untyped]  # no stubs; pyproject lists no override for it
import httpx
from observe.v1 import status_pages_pb2 as pb

from core import clock
from core.status_pages.feed import render_feed
from core.status_pages.store import PageRow
from tests.conftest import Persona, Server
from tests.polling import wait_for

API = "/api/v1/status-pages"
PUBLIC = "/api/v1/status-pages/public"
TRICKY = "Checkout <b>slow</b> & \"flaky\" 'again'"


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_page(c: httpx.Client, **extra: Any) -> tuple[dict[str, Any], int]:
    r = c.post("/api/v1/monitors", json={"name": "api-internal-name", "type": "heartbeat"})
    assert r.status_code == 201, r.text
    monitor_id = int(r.json()["id"])
    body = {
        "name": "Acme status",
        "slug": f"feed-{uuid.uuid4().hex[:10]}",
        "groups": [{"name": "Core", "components": [{"monitorId": monitor_id, "displayName": "API"}]}],
        **extra,
    }
    r = c.post(API, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json()), monitor_id


def parsed(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(r.content)
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    return feed


def test_the_feed_lists_incidents_with_their_updates_and_maintenance(server: Server, owner: Persona) -> None:
    now = datetime.now(UTC)
    domain = f"status-{uuid.uuid4().hex[:8]}.example.com"
    with owner.client() as c:
        page, monitor_id = make_page(c, customDomain=domain)
        r = c.post(
            "/api/v1/incidents", json={"title": TRICKY, "status": "investigating", "message": "Looking <into> it"}
        )
        assert r.status_code == 201, r.text
        incident = r.json()
        r = c.post(f"/api/v1/incidents/{incident['id']}/updates", json={"status": "identified", "message": "A & B"})
        assert r.status_code == 201, r.text
        window = {
            "name": "Database upgrade",
            "description": "Read-only for a while",
            "startsAt": iso(now + timedelta(days=2)),
            "endsAt": iso(now + timedelta(days=2, hours=1)),
            "monitorIds": [monitor_id],
        }
        assert c.post("/api/v1/maintenance-windows", json=window).status_code == 201

    slug = page["slug"]
    with server.client() as anon:

        def feed_with_both() -> Any:
            feed = parsed(anon.get(f"{PUBLIC}/{slug}/feed.xml"))
            titles = [e.title for e in feed.entries]
            return feed if TRICKY in titles and any("Database upgrade" in t for t in titles) else None

        feed = wait_for(feed_with_both, "the incident and the maintenance in the feed")
        assert feed.feed.title == "Acme status"
        links = {link.rel: link.href for link in feed.feed.links}
        assert links == {
            "alternate": f"{server.base_url}/status/{slug}",
            "self": f"{server.base_url}/status/{slug}/feed.xml",
        }
        entry = next(e for e in feed.entries if e.title == TRICKY)
        html = entry.content[0].value
        assert entry.content[0].type == "text/html"
        # The content is HTML: the texts in it are escaped once, and show as written.
        assert "Looking &lt;into&gt; it" in html
        assert "A &amp; B" in html
        assert "Identified" in html
        assert entry.link == links["alternate"]
        assert entry.published_parsed
        assert entry.updated_parsed
        maintenance = next(e for e in feed.entries if "Database upgrade" in e.title)
        assert "Read-only for a while" in maintenance.content[0].value
        assert "API" in maintenance.content[0].value

        # Nothing private: no incident or monitor id, no monitor name (the page calls it "API").
        raw = anon.get(f"{PUBLIC}/{slug}/feed.xml").text
        assert "api-internal-name" not in raw
        for e in feed.entries:
            assert e.id.startswith("urn:uuid:")
        assert feed.feed.id.startswith("urn:uuid:")

        # The same document (ids and all) at the page's own route and on its custom domain.
        by_path = parsed(anon.get(f"/status/{slug}/feed.xml"))
        by_host = parsed(anon.get("/feed.xml", headers={"host": domain}))
        for other in (by_path, by_host):
            assert other.feed.id == feed.feed.id
            assert [e.id for e in other.entries] == [e.id for e in feed.entries]
        assert {link.rel: link.href for link in by_host.feed.links}["self"] == f"http://{domain}/feed.xml"
        assert anon.get(f"{PUBLIC}/{slug}/feed.xml").headers["cache-control"] == "public, max-age=30"
        unknown = anon.get(f"{PUBLIC}/no-such-page-{uuid.uuid4().hex[:6]}/feed.xml")
        assert (unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND")

    # Resolving keeps the entry (a recent incident) under the same id, updated.
    with owner.client() as c:
        r = c.post(f"/api/v1/incidents/{incident['id']}/resolve", json={"message": "All good now"})
        assert r.status_code == 200, r.text
    with server.client() as anon:

        def resolved() -> Any:
            feed = parsed(anon.get(f"{PUBLIC}/{slug}/feed.xml"))
            e = next(e for e in feed.entries if e.title == TRICKY)
            return e if "All good now" in e.content[0].value else None

        after = wait_for(resolved, "the resolution in the feed")
        assert after.id == entry.id
        assert after.updated_parsed >= entry.updated_parsed


def _page(**overrides: Any) -> PageRow:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    fields: dict[str, Any] = {
        "id": 41, "org_id": 3, "name": "Acme", "slug": "acme", "description": None, "custom_domain": None,
        "published": True, "groups": (), "history_days": 90, "show_maintenance": True, "accent_color": None,
        "password_hash": None, "created_at": at, "updated_at": at,
    }  # fmt: skip
    return PageRow(**{**fields, **overrides})


def _view(now: datetime, *, title: str = TRICKY, computed: datetime | None = None) -> pb.GetPublicStatusPageResponse:
    view = pb.GetPublicStatusPageResponse()
    view.page.name = "Acme <status> & co"
    view.updated_at.CopyFrom(clock.to_timestamp(computed or now))
    incident = view.active_incidents.add(title=title, status="identified", components=["API"])
    incident.started_at.CopyFrom(clock.to_timestamp(now - timedelta(hours=2)))
    for minutes, status, message in ((120, "investigating", "Looking\x0b into it"), (30, "identified", "Found it")):
        update = incident.updates.add(status=status, message=message)
        update.created_at.CopyFrom(clock.to_timestamp(now - timedelta(minutes=minutes)))
    twin = view.recent_incidents.add(title="Same second", status="resolved")  # starts in the same second
    twin.started_at.CopyFrom(incident.started_at)
    twin.resolved_at.CopyFrom(clock.to_timestamp(now - timedelta(hours=1)))
    twin.postmortem = "# What happened\n\nA <b>bad</b> deploy."
    for name, days in (("Upgrade", 1), ("Another", 1)):
        window = view.maintenance.upcoming.add(name=name, components=["API"])
        window.starts_at.CopyFrom(clock.to_timestamp(now + timedelta(days=days)))
        window.ends_at.CopyFrom(clock.to_timestamp(now + timedelta(days=days, hours=1)))
    ongoing = view.maintenance.active.add(name="Network work", description="Expect blips")
    ongoing.starts_at.CopyFrom(clock.to_timestamp(now - timedelta(minutes=10)))
    ongoing.ends_at.CopyFrom(clock.to_timestamp(now + timedelta(minutes=50)))
    return view


def test_ids_are_stable_distinct_and_the_texts_literal() -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    url = "https://status.example.com/"
    first = feedparser.parse(render_feed(_view(now), _page(), url, url + "feed.xml"))
    assert not first.bozo, first.get("bozo_exception")
    assert first.feed.title == "Acme <status> & co"
    entry = next(e for e in first.entries if e.title == TRICKY)
    assert "Looking into it" in entry.content[0].value  # the vertical tab, which XML cannot carry, is dropped
    # The feed was last changed when the maintenance began; the upcoming ones have not happened yet.
    assert first.feed.updated == "2026-06-01T11:50:00Z"
    assert entry.published == "2026-06-01T10:00:00Z"
    assert entry.updated == "2026-06-01T11:30:00Z"

    postmortem = next(e for e in first.entries if e.title == "Same second").content[0].value
    assert "A &lt;b&gt;bad&lt;/b&gt; deploy." in postmortem  # the Markdown as text, never as markup
    ongoing = next(e for e in first.entries if e.title == "Maintenance in progress: Network work")
    assert "Expect blips" in ongoing.content[0].value
    assert ongoing.updated == "2026-06-01T11:50:00Z"
    # Entries newest first; the upcoming maintenance (dated by its start) ahead.
    assert {e.title for e in first.entries[:2]} == {"Scheduled maintenance: Another", "Scheduled maintenance: Upgrade"}
    assert [e.title for e in first.entries[2:]] == ["Maintenance in progress: Network work", TRICKY, "Same second"]

    ids = [e.id for e in first.entries]
    assert len(set(ids)) == len(ids) == 5
    # Computed later, with the incident renamed: the same ids (readers see an edit, not a new entry).
    later = feedparser.parse(
        render_feed(_view(now, title="Renamed", computed=now + timedelta(minutes=5)), _page(), url, url)
    )
    assert {e.id for e in later.entries} == set(ids)
    # Another page: other ids.
    other = feedparser.parse(render_feed(_view(now), _page(id=42), url, url))
    assert not {e.id for e in other.entries} & set(ids)
    assert other.feed.id != first.feed.id
