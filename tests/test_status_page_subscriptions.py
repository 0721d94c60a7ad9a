"""E-mail subscriptions of status pages, end to end through the real server and a real SMTP sink: double
opt-in (the confirmation mail's link, the same answer for any address), incident mail with RFC 8058
headers, the one-click unsubscribe after which nothing more arrives; pending subscribers and other pages'
subscribers get nothing; maintenance notices; a monitor going down mails its pages' subscribers; forged
and garbled links are refused, never a 500.

Each test talks to the public routes from its own loopback address (127.x.y.z): subscribing is limited
per IP (10 an hour), and the session server is shared with every other test.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from core.alerts import AlertMessage, ChannelSettings
from core.alerts.subscriber import SubscriberChannel, SubscriberTarget
from core.config import SmtpSettings
from core.incidents.tables import alert_outbox
from tests.conftest import SQLITE_ONLY, Persona, Server, SmtpSink, free_port
from tests.polling import wait_for
from tests.targets import http_target

API = "/api/v1/status-pages"
PUBLIC = "/api/v1/status-pages/public"
ONE_CLICK = "List-Unsubscribe=One-Click"

# Subscriptions, their links and their mail go through the same services, outbox and dispatcher on
# either database (the dispatcher's claims are tested on both in test_alert_delivery): one backend
# proves these flows (SQLITE_ONLY on each test of the session server), and the suite's time is tight.


# ---- helpers -------------------------------------------------------------------------------------------


def visitor(server: Server) -> httpx.Client:
    """A client of the public routes from an address of its own on the loopback network."""
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.base_url, transport=transport, timeout=30)


def address(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}@example.com"


def monitor(c: httpx.Client, name: str = "api", **body: Any) -> int:
    r = c.post("/api/v1/monitors", json={"name": name, "type": "heartbeat", **body})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def page(c: httpx.Client, monitor_ids: list[int], name: str = "Acme status", **extra: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "slug": f"subs-{uuid.uuid4().hex[:10]}",
        "groups": [{"name": "Core", "components": [{"monitorId": m} for m in monitor_ids]}],
        **extra,
    }
    r = c.post(API, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def subscribe(public: httpx.Client, slug: str, email: str) -> None:
    r = public.post(f"{PUBLIC}/{slug}/subscribe", json={"email": email})
    assert (r.status_code, r.json()) == (202, {"pending": True}), r.text


def mails(sink: SmtpSink, to: str) -> list[Message]:
    return [m for m in list(sink.messages) if m["To"] == to]


def body(mail: Message) -> str:
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def wait_mail(sink: SmtpSink, to: str, subject: str, *, timeout: float = 15) -> Message:
    """The first mail to ``to`` whose subject contains ``subject``."""

    def find() -> Message | None:
        return next((m for m in mails(sink, to) if subject in str(m["Subject"])), None)

    found: Message = wait_for(find, f"a mail to {to} about {subject!r}", timeout=timeout)
    return found


def link(mail: Message, kind: str) -> str:
    """The mail's confirm or unsubscribe link."""
    match = re.search(rf"http://\S+/{kind}\?token=[A-Za-z0-9_.-]+", body(mail))
    assert match, body(mail)
    return match.group(0)


def confirm(public: httpx.Client, sink: SmtpSink, email: str) -> Message:
    """Follows the confirmation mail's link and presses its button, as a person does (the HTML
    routes: opening the link, what a mail scanner does too, confirms nothing); returns the mail."""
    mail = wait_mail(sink, email, "Confirm your subscription")
    url = link(mail, "subscribe/confirm")
    shown = public.get(url)
    assert shown.status_code == 200, shown.text
    assert "text/html" in shown.headers["content-type"]
    assert 'method="post"' in shown.text
    r = public.post(url, data={})
    assert r.status_code == 200, r.text
    assert "Subscription confirmed" in r.text
    return mail


def subscribers(owner: Persona, page_id: int) -> dict[str, bool]:
    with owner.client() as c:
        r = c.get(f"{API}/{page_id}/subscribers")
    assert r.status_code == 200, r.text
    return {s["email"]: s["confirmed"] for s in r.json()["subscribers"]}


def unsubscribe_header(mail: Message) -> str:
    value = str(mail["List-Unsubscribe"])
    assert value[0] + value[-1] == "<>", value
    return value[1:-1]


# ---- the flow ------------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_subscribe_confirm_get_incident_mail_and_unsubscribe_with_one_click(
    server: Server, owner: Persona, smtp_sink: SmtpSink
) -> None:
    alice, bob = address("Alice").replace("Alice", "ALICE"), address("bob")
    with owner.client() as c, visitor(server) as public:
        m = monitor(c)
        p = page(c, [m])
        slug = p["slug"]
        subscribe(public, slug, alice)
        subscribe(public, slug, bob)

        # Stored and mailed lower-cased; the confirmation mail carries the unsubscribe headers too.
        alice = alice.lower()
        mail = wait_mail(smtp_sink, alice, "Confirm your subscription")
        assert mail["List-Unsubscribe-Post"] == ONE_CLICK
        assert f"/status/{slug}/unsubscribe?token=" in unsubscribe_header(mail)
        assert link(mail, "subscribe/confirm").startswith(f"{server.base_url}/status/{slug}/subscribe/confirm?token=")
        assert subscribers(owner, p["id"]) == {alice: False, bob: False}
        confirm(public, smtp_sink, alice)
        # The API's confirm route takes the same link's token.
        token = link(wait_mail(smtp_sink, bob, "Confirm your subscription"), "subscribe/confirm").split("token=")[1]
        r = public.get(f"{PUBLIC}/{slug}/subscribe/confirm", params={"token": token})
        assert (r.status_code, r.json()) == (200, {"confirmed": True}), r.text
        assert subscribers(owner, p["id"]) == {alice: True, bob: True}
        assert c.get(f"{API}/{p['id']}").json()["subscriberCount"] == 2

        # Subscribing a confirmed address again answers the same and changes nothing.
        subscribe(public, slug, alice.upper())
        assert subscribers(owner, p["id"]) == {alice: True, bob: True}

        # An incident on the page's monitor: both hear of it, with the one-click headers.
        r = c.post("/api/v1/incidents", json={"title": "Checkout is slow", "monitorId": m, "message": "Looking"})
        assert r.status_code == 201, r.text
        incident = r.json()
        opened = wait_mail(smtp_sink, alice, "Checkout is slow")
        wait_mail(smtp_sink, bob, "Checkout is slow")
        assert opened["Subject"] == "[Acme status] Checkout is slow"
        assert "Looking" in body(opened)
        assert opened["List-Unsubscribe-Post"] == ONE_CLICK
        one_click = unsubscribe_header(opened)
        assert one_click.startswith(f"{server.base_url}/status/{slug}/unsubscribe?token=")
        assert one_click in body(opened)

        r = c.post(f"/api/v1/incidents/{incident['id']}/updates", json={"status": "identified", "message": "A bad DB"})
        assert r.status_code == 201, r.text
        update = wait_mail(smtp_sink, alice, "Update: Checkout is slow")
        assert "A bad DB" in body(update)
        assert "Status: Identified" in body(update)
        wait_mail(smtp_sink, bob, "Update: Checkout is slow")

        # The organisation sees the deliveries, never the addresses.
        seen = c.get(f"/api/v1/incidents/{incident['id']}")
        assert {d["channel"] for d in seen.json()["deliveries"]} == {"subscriber"}
        assert {d["outcome"] for d in seen.json()["deliveries"]} == {"delivered"}
        assert alice not in seen.text
        assert bob not in seen.text

        # Following the link (GET: what a link scanner does) changes nothing; the one-click POST unsubscribes.
        r = public.get(one_click)
        assert r.status_code == 200, r.text
        assert "<form" in r.text
        assert subscribers(owner, p["id"]) == {alice: True, bob: True}
        r = public.post(one_click, content=ONE_CLICK, headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200, r.text
        assert subscribers(owner, p["id"]) == {bob: True}
        # A mail client may post twice.
        r = public.post(one_click, content=ONE_CLICK, headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200, r.text

        before = len(mails(smtp_sink, alice))
        r = c.post(f"/api/v1/incidents/{incident['id']}/resolve", json={"message": "Fixed"})
        assert r.status_code == 200, r.text
        resolved = wait_mail(smtp_sink, bob, "Resolved: Checkout is slow")
        assert "Fixed" in body(resolved)
        assert len(mails(smtp_sink, alice)) == before
        assert [m["Subject"] for m in mails(smtp_sink, alice)] == [
            "Confirm your subscription to Acme status",
            "[Acme status] Checkout is slow",
            "[Acme status] Update: Checkout is slow",
        ]
        # Its old links are dead: the confirm link no longer confirms anything.
        r = public.post(link(mail, "subscribe/confirm"), data={})
        assert r.status_code == 404, r.text


@SQLITE_ONLY
def test_pending_subscribers_and_other_pages_get_no_incident_mail(
    server: Server, owner: Persona, smtp_sink: SmtpSink
) -> None:
    carol, dave, erin = address("carol"), address("dave"), address("erin")
    with owner.client() as c, visitor(server) as public:
        m1, m2 = monitor(c, "api"), monitor(c, "web")
        p1, p2 = page(c, [m1], name="API status"), page(c, [m2], name="Web status")
        hidden = page(c, [m1], name="Draft", published=False)
        subscribe(public, p1["slug"], carol)  # never confirms
        subscribe(public, p1["slug"], erin)
        subscribe(public, p2["slug"], dave)
        confirm(public, smtp_sink, erin)
        confirm(public, smtp_sink, dave)
        # Carol's mail scanner opens her link: that confirms nothing (only the button does).
        scanned = public.get(link(wait_mail(smtp_sink, carol, "Confirm your subscription"), "subscribe/confirm"))
        assert scanned.status_code == 200, scanned.text
        assert subscribers(owner, p1["id"])[carol] is False

        # The API monitor's incident: only p1's confirmed subscriber hears of it.
        r = c.post("/api/v1/incidents", json={"title": "API errors", "monitorId": m1})
        assert r.status_code == 201, r.text
        api_incident = r.json()["id"]
        wait_mail(smtp_sink, erin, "[API status] API errors")
        # A manual incident without a monitor shows on every published page of the org.
        r = c.post("/api/v1/incidents", json={"title": "Everything is slow"})
        assert r.status_code == 201, r.text
        wait_mail(smtp_sink, erin, "[API status] Everything is slow")
        wait_mail(smtp_sink, dave, "[Web status] Everything is slow")

        outbox = server.sql(select(alert_outbox.c.subscriber_id, alert_outbox.c.event, alert_outbox.c.incident_id))
        about_api = {row.subscriber_id for row in outbox if row.incident_id == api_incident}
        assert len(about_api) == 1  # erin's only: not carol (pending), not dave (p2), not the draft page
        assert not any(s == "API errors" for s in (m["Subject"] for m in mails(smtp_sink, dave)))
        assert [m["Subject"] for m in mails(smtp_sink, carol)] == ["Confirm your subscription to API status"]
        assert subscribers(owner, hidden["id"]) == {}


@SQLITE_ONLY
def test_maintenance_notices_go_to_the_pages_it_covers(server: Server, owner: Persona, smtp_sink: SmtpSink) -> None:
    frank, gina = address("frank"), address("gina")
    with owner.client() as c, visitor(server) as public:
        db, edge = monitor(c, "db"), monitor(c, "edge", tags=["edge"])
        p1, p2 = page(c, [db], name="DB status"), page(c, [edge], name="Edge status")
        subscribe(public, p1["slug"], frank)
        subscribe(public, p2["slug"], gina)
        confirm(public, smtp_sink, frank)
        confirm(public, smtp_sink, gina)

        start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
        window = {
            "name": "Database upgrade",
            "description": "Read-only for a while",
            "startsAt": start.isoformat().replace("+00:00", "Z"),
            "endsAt": (start + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
            "monitorIds": [db],
        }
        r = c.post("/api/v1/maintenance-windows", json=window)
        assert r.status_code == 201, r.text
        w = r.json()
        scheduled = wait_mail(smtp_sink, frank, "Scheduled maintenance: Database upgrade")
        assert "Read-only for a while" in body(scheduled)
        assert start.strftime("%Y-%m-%d %H:%M UTC") in body(scheduled)
        assert scheduled["List-Unsubscribe-Post"] == ONE_CLICK

        # Covering the edge page too (by tag) is news to gina only; a new description, to both.
        r = c.patch(f"/api/v1/maintenance-windows/{w['id']}", json={"tags": ["edge"]})
        assert r.status_code == 200, r.text
        wait_mail(smtp_sink, gina, "Scheduled maintenance: Database upgrade")
        r = c.patch(f"/api/v1/maintenance-windows/{w['id']}", json={"description": "Read-only for an hour"})
        assert r.status_code == 200, r.text
        changed = wait_mail(smtp_sink, frank, "Maintenance changed: Database upgrade")
        assert "Read-only for an hour" in body(changed)
        wait_mail(smtp_sink, gina, "Maintenance changed: Database upgrade")
        assert [m["Subject"] for m in mails(smtp_sink, frank)][1:] == [
            "[DB status] Scheduled maintenance: Database upgrade",
            "[DB status] Maintenance changed: Database upgrade",
        ]

        r = c.delete(f"/api/v1/maintenance-windows/{w['id']}")
        assert r.status_code in (200, 204), r.text
        wait_mail(smtp_sink, frank, "Maintenance cancelled: Database upgrade")
        wait_mail(smtp_sink, gina, "Maintenance cancelled: Database upgrade")
        # A window already over tells nobody.
        past = {**window, "name": "Old work", "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2020-01-01T01:00:00Z"}
        assert c.post("/api/v1/maintenance-windows", json=past).status_code == 201
        r = c.post("/api/v1/incidents", json={"title": "Witness"})
        wait_mail(smtp_sink, frank, "Witness")
        assert not any("Old work" in str(m["Subject"]) for m in mails(smtp_sink, frank))


@SQLITE_ONLY
def test_a_monitor_going_down_and_up_mails_its_pages_subscribers(
    server: Server, owner: Persona, smtp_sink: SmtpSink
) -> None:
    hana = address("hana")
    with http_target() as target, owner.client() as c, visitor(server) as public:
        target.status = 500
        m = monitor(c, "internal-shop-7", type="http", url=f"{target.url}/shop", intervalSec=30, failureThreshold=1)
        groups = [{"name": "Core", "components": [{"monitorId": m, "displayName": "Shop"}]}]
        p = page(c, [m], name="Shop status", groups=groups)
        subscribe(public, p["slug"], hana)
        confirm(public, smtp_sink, hana)
        # Named as the page names it; the engine's own texts (the monitor's
        # internal name, the check's error with host and port) stay private.
        opened = wait_mail(smtp_sink, hana, "[Shop status] Shop is down", timeout=30)
        assert "Status: Investigating" in body(opened)
        target.status = 200
        resolved = wait_mail(smtp_sink, hana, "[Shop status] Resolved: Shop is down", timeout=30)
        host_port = target.url.split("://", 1)[1]
        for mail in (opened, resolved):
            text = str(mail)
            for private in ("internal-shop-7", host_port, target.url, "HTTP 500"):
                assert private not in text.replace(f"/{p['slug']}/", "/"), (private, text)


@SQLITE_ONLY
def test_the_html_form_subscribes_and_the_api_link_unsubscribes(
    server: Server, owner: Persona, smtp_sink: SmtpSink
) -> None:
    ivan = address("ivan")
    with owner.client() as c, visitor(server) as public:
        p = page(c, [monitor(c)])
        r = public.post(f"/status/{p['slug']}/subscribe", data={"email": ivan})
        assert r.status_code == 200, r.text
        assert "text/html" in r.headers["content-type"]
        r = public.post(f"/status/{p['slug']}/subscribe", data={"email": "not an address"})
        assert r.status_code == 400, r.text
        mail = confirm(public, smtp_sink, ivan)
        assert subscribers(owner, p["id"]) == {ivan: True}
        token = link(mail, "unsubscribe").split("token=")[1]
        r = public.get(f"{PUBLIC}/unsubscribe", params={"token": token})
        assert (r.status_code, r.json()) == (200, {"unsubscribed": True}), r.text
        assert subscribers(owner, p["id"]) == {}
        r = public.post(f"{PUBLIC}/unsubscribe", params={"token": token}, content=ONE_CLICK,
                        headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert (r.status_code, r.json()) == (200, {"unsubscribed": True}), r.text


@SQLITE_ONLY
def test_forged_and_garbled_links_are_refused(server: Server, owner: Persona, smtp_sink: SmtpSink) -> None:
    jo = address("jo")
    with owner.client() as c, visitor(server) as public:
        m = monitor(c)
        p, other = page(c, [m]), page(c, [m], name="Other page")
        slug = p["slug"]
        subscribe(public, slug, jo)
        mail = wait_mail(smtp_sink, jo, "Confirm your subscription")
        confirm_token = link(mail, "subscribe/confirm").split("token=")[1]
        unsubscribe_token = link(mail, "unsubscribe").split("token=")[1]
        payload, signature = unsubscribe_token.rsplit(".", 1)
        forged = [
            "",
            "garbage",
            "%00%ff",
            "a.b.c",
            f"{payload}.{signature[::-1]}",  # a wrong signature
            f"MjAwMA.{signature}",  # another subscriber id under the signature
            confirm_token[:-2],
        ]
        for token in forged:
            for route in (f"{PUBLIC}/{slug}/subscribe/confirm", f"{PUBLIC}/unsubscribe"):
                r = public.get(route, params={"token": token})
                assert (r.status_code, r.json()["code"]) == (404, "NOT_FOUND"), (token, route, r.text)
            r = public.post(f"/status/{slug}/subscribe/confirm", params={"token": token}, data={})
            assert (r.status_code, r.headers["x-error-code"]) == (404, "NOT_FOUND"), (token, r.text)
            assert "text/html" in r.headers["content-type"]
            r = public.post(f"/status/{slug}/unsubscribe", params={"token": token}, content=ONE_CLICK,
                            headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
            assert (r.status_code, r.headers["x-error-code"]) == (404, "NOT_FOUND"), (token, r.text)
        # Each link is for one purpose and one page.
        r = public.get(f"{PUBLIC}/{slug}/subscribe/confirm", params={"token": unsubscribe_token})
        assert r.status_code == 404, r.text
        r = public.get(f"{PUBLIC}/unsubscribe", params={"token": confirm_token})
        assert r.status_code == 404, r.text
        r = public.get(f"{PUBLIC}/{other['slug']}/subscribe/confirm", params={"token": confirm_token})
        assert r.status_code == 404, r.text
        # An unsubscribe link's token alone names the subscription (old mails outlive slugs), so
        # under another page's path it still works, but never shows that page's name.
        r = public.get(f"/status/{other['slug']}/unsubscribe", params={"token": unsubscribe_token})
        assert r.status_code == 200, r.text
        assert other["name"] not in r.text
        assert subscribers(owner, p["id"]) == {jo: False}
        # Too long for any token of ours; not an address.
        r = public.get(f"{PUBLIC}/unsubscribe", params={"token": "x" * 2000})
        assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_FAILED"), r.text
        r = public.post(f"{PUBLIC}/{slug}/subscribe", json={"email": "jo@"})
        assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_FAILED"), r.text
        assert [f["path"] for f in r.json()["fields"]] == ["email"]
        # The real links still work.
        r = public.get(f"{PUBLIC}/{slug}/subscribe/confirm", params={"token": confirm_token})
        assert r.status_code == 200, r.text
        assert subscribers(owner, p["id"]) == {jo: True}


class Rejecting:
    """An SMTP server that refuses every message at DATA, quoting the recipient."""

    def __init__(self, code: int) -> None:
        self.code = code

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return f"{self.code} 5.7.1 <{envelope.rcpt_tos[0].upper()}> is not taking mail"


@pytest.mark.parametrize(("code", "outcome"), [(554, "failed"), (451, "retry")])
def test_an_smtp_refusal_is_classified_and_never_names_the_address(code: int, outcome: str) -> None:
    controller = Controller(Rejecting(code), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        channel = SubscriberChannel(
            ChannelSettings(smtp=SmtpSettings(host="127.0.0.1", port=controller.port), timeout_sec=5)
        )
        target = SubscriberTarget(
            "kim@example.com", "Acme status", "http://x/status/a", "http://x/status/a/unsubscribe"
        )
        notice = {"incident": {"title": "Down", "status": "investigating", "startedAt": "2026-11-30T05:00:00Z"}}
        message = AlertMessage(event="incident.opened", incident=None, monitor=None, notice=notice)
        result = asyncio.run(channel.send(message, target))
    finally:
        controller.stop()
    assert result.outcome == outcome
    assert result.error == f"SMTP {code}: 5.7.1 <the subscriber's address> is not taking mail"
    # A message that is not one for subscribers is refused before anything is sent.
    odd = asyncio.run(channel.send(AlertMessage(event="test", incident=None, monitor=None), target))
    assert (odd.outcome, odd.error) == ("failed", "no subscriber mail for 'test'")


@SQLITE_ONLY
def test_old_mail_links_unsubscribe_after_the_page_is_renamed(
    server: Server, owner: Persona, smtp_sink: SmtpSink
) -> None:
    jo = address("jo")
    with owner.client() as c, visitor(server) as public:
        p = page(c, [monitor(c, "api")], name="Renamed later")
        subscribe(public, p["slug"], jo)
        mail = confirm(public, smtp_sink, jo)
        old_link = unsubscribe_header(mail)
        assert c.patch(f"{API}/{p['id']}", json={"slug": f"{p['slug']}-new"}).status_code == 200
        assert public.get(old_link).status_code == 200  # the button still shows
        r = public.post(old_link, content=ONE_CLICK, headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200, r.text
        assert subscribers(owner, p["id"]) == {}
