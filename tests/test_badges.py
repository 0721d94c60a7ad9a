"""Monitor badges, GET /api/v1/badge/monitors/{id}.svg: a shields-style SVG
of the status or the uptime over a period, for monitors with publicBadge or
on an open published status page only (else 404, as for no monitor at all),
with cache headers; labels measured so they fit, and escaped."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core.status_pages.badge_svg import render_badge
from core.status_pages.badges import format_uptime, uptime_color
from tests.conftest import Persona, Server
from tests.polling import wait_for
from tests.targets import Target, http_target

SVG = "{http://www.w3.org/2000/svg}"


def badge_url(monitor_id: int | str) -> str:
    return f"/api/v1/badge/monitors/{monitor_id}.svg"


def monitor(c: httpx.Client, **body: Any) -> int:
    r = c.post("/api/v1/monitors", json={"name": "hb", "type": "heartbeat", **body})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def svg(r: httpx.Response) -> ET.Element:
    """The badge's root element, after checking the reply is an SVG badge."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert r.headers["cache-control"] == "public, max-age=60"
    root = ET.fromstring(r.content)
    assert root.tag == f"{SVG}svg"
    assert int(root.attrib["width"]) > 0
    assert root.attrib["height"] == "20"
    assert root.attrib["role"] == "img"
    title = root.find(f"{SVG}title")
    assert title is not None
    assert root.attrib["aria-label"] == title.text
    return root


def says(r: httpx.Response) -> str:
    """What the badge says ("label: message")."""
    return svg(r).attrib["aria-label"]


def not_found(r: httpx.Response) -> None:
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "NOT_FOUND"


@pytest.fixture
def target() -> Iterator[Target]:
    with http_target() as tgt:
        yield tgt


def test_status_and_uptime_of_checked_monitors(server: Server, owner: Persona, target: Target) -> None:
    with owner.client() as c:
        http = {"type": "http", "url": target.url, "intervalSec": 30, "publicBadge": True}
        up = monitor(c, **http)
        down = monitor(c, **http, expectedStatus=[204])  # the target answers 200

        def settled() -> bool:
            statuses = {m: c.get(f"/api/v1/monitors/{m}").json()["status"] for m in (up, down)}
            stats = [c.get(f"/api/v1/monitors/{m}/stats").json()["last24h"]["checks"] for m in (up, down)]
            return statuses == {up: "up", down: "down"} and min(stats) > 0

        wait_for(settled, "one monitor up and one down, with checks in the rollups")

    with server.client() as anon:
        assert says(anon.get(badge_url(up))) == "status: up"
        assert says(anon.get(badge_url(down))) == "status: down"
        assert says(anon.get(badge_url(up), params={"metric": "uptime", "period": "24h"})) == "uptime 24h: 100%"
        assert says(anon.get(badge_url(down), params={"metric": "uptime", "period": "7d"})) == "uptime 7d: 0%"
        fills = [rect.attrib["fill"] for rect in svg(anon.get(badge_url(down))).iter(f"{SVG}rect")]
        assert "#e05d44" in fills  # red
        square = svg(anon.get(badge_url(up), params={"style": "flat-square", "label": "api"}))
        assert square.attrib["aria-label"] == "api: up"
        assert square.find(f"{SVG}linearGradient") is None  # flat-square: no gloss


def test_other_states_and_no_data(server: Server, owner: Persona) -> None:
    now = datetime.now(UTC)
    with owner.client() as c:
        pending = monitor(c, publicBadge=True)
        paused = monitor(c, publicBadge=True, paused=True)
        covered = monitor(c, publicBadge=True)
        window = {
            "name": "now",
            "startsAt": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endsAt": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "monitorIds": [covered],
        }
        assert c.post("/api/v1/maintenance-windows", json=window).status_code == 201
        assert c.get(f"/api/v1/monitors/{covered}").json()["status"] == "maintenance"
    with server.client() as anon:
        assert says(anon.get(badge_url(pending))) == "status: pending"
        assert says(anon.get(badge_url(paused))) == "status: paused"
        assert says(anon.get(badge_url(pending), params={"metric": "uptime"})) == "uptime 30d: no data"
        assert says(anon.get(badge_url(pending), params={"metric": "uptime", "period": "90d"})) == "uptime 90d: no data"
        assert says(anon.get(badge_url(covered))) == "status: maintenance"


def test_only_public_monitors_have_a_badge(server: Server, owner: Persona, outsider: Persona) -> None:
    with owner.client() as c:
        private = monitor(c)
        later_public = monitor(c)
        on_locked_page = monitor(c)
    with outsider.client() as c:
        theirs = monitor(c)
        theirs_public = monitor(c, publicBadge=True)
    anon = server.client()
    for monitor_id in (private, later_public, on_locked_page, theirs, 10**15):
        not_found(anon.get(badge_url(monitor_id)))
    not_found(anon.get(badge_url("abc")))
    assert says(anon.get(badge_url(theirs_public))) == "status: pending"  # public to everyone, whoever owns it

    with owner.client() as c:
        slug = f"badge-{uuid.uuid4().hex[:10]}"
        group = {"name": "Core", "components": [{"monitorId": private}]}
        r = c.post("/api/v1/status-pages", json={"name": "Acme", "slug": slug, "published": False, "groups": [group]})
        assert r.status_code == 201, r.text
        page_id = r.json()["id"]
        not_found(anon.get(badge_url(private)))  # on a page, but not a published one
        assert c.patch(f"/api/v1/status-pages/{page_id}", json={"published": True}).status_code == 200
        assert says(anon.get(badge_url(private))) == "status: pending"

        # A locked page's components are not public: nor are their badges.
        locked = {
            "name": "Locked",
            "slug": f"{slug}-x",
            "groups": [{"name": "G", "components": [{"monitorId": on_locked_page}]}],
        }
        r = c.post("/api/v1/status-pages", json=locked)
        assert r.status_code == 201, r.text
        assert (
            c.put(f"/api/v1/status-pages/{r.json()['id']}/password", json={"password": "a secret!"}).status_code == 200
        )
        not_found(anon.get(badge_url(on_locked_page)))

        assert c.patch(f"/api/v1/monitors/{later_public}", json={"publicBadge": True}).status_code == 200
        assert says(anon.get(badge_url(later_public))) == "status: pending"
    anon.close()


def test_labels_fit_are_escaped_and_input_is_checked(server: Server, owner: Persona) -> None:
    with owner.client() as c:
        monitor_id = monitor(c, publicBadge=True)
    with server.client() as anon:
        short = svg(anon.get(badge_url(monitor_id), params={"label": "a"}))
        long = svg(anon.get(badge_url(monitor_id), params={"label": "a much longer label"}))
        assert int(long.attrib["width"]) > int(short.attrib["width"]) + 80
        # Each text's textLength is the width measured for it: the label box holds it with 5 px each side.
        label_rect = long.find(f"{SVG}g/{SVG}rect")
        texts = long.findall(f"{SVG}g/{SVG}text")
        assert label_rect is not None
        assert int(label_rect.attrib["width"]) == int(texts[0].attrib["textLength"]) // 10 + 10

        r = anon.get(badge_url(monitor_id), params={"label": "<script>alert(1)</script>"})
        assert b"<script>" not in r.content
        assert b"&lt;script&gt;" in r.content
        assert says(r) == "<script>alert(1)</script>: pending"
        assert says(anon.get(badge_url(monitor_id), params={"label": ""})) == "pending"  # message only

        for params in ({"metric": "latency"}, {"period": "1y"}, {"style": "plastic"}, {"label": "x" * 65}):
            bad = anon.get(badge_url(monitor_id), params=params)
            assert (bad.status_code, bad.json()["code"]) == (400, "VALIDATION_FAILED"), params


def test_the_layout_is_shields() -> None:
    # shields.io's own "build: passing" badge, to the pixel (badge-maker, flat).
    root = ET.fromstring(render_badge("build", "passing", "#4c1"))
    assert root.attrib["width"] == "88"
    rects = [r.attrib for r in root.iter(f"{SVG}rect")]
    assert (rects[1]["width"], rects[2]["x"], rects[2]["width"]) == ("37", "37", "51")
    texts = [
        (t.attrib["x"], t.attrib["textLength"], t.text)
        for t in root.iter(f"{SVG}text")
        if "aria-hidden" not in t.attrib
    ]
    assert texts == [("195", "270", "build"), ("615", "410", "passing")]
    # Characters XML cannot carry are dropped; the rest is escaped by the serialiser.
    assert ET.fromstring(render_badge("a\x00b & <c>", "ok", "#4c1")).attrib["aria-label"] == "ab & <c>: ok"


def test_uptime_reads_as_shields_shows_it() -> None:
    assert format_uptime(10, 10) == "100%"
    assert format_uptime(19_999, 20_000) == "99.99%"  # 99.995: cut, never rounded up to 100
    assert format_uptime(1999, 2000) == "99.95%"
    assert format_uptime(199, 200) == "99.5%"
    assert format_uptime(0, 7) == "0%"
    assert [uptime_color(n, 1000) for n in (1000, 995, 980, 960, 920, 500)] == [
        "#4c1", "#97ca00", "#a4a61d", "#dfb317", "#fe7d37", "#e05d44",
    ]  # fmt: skip
