"""The status page's HTML without a server: postmortem Markdown sanitised,
everything escaped, the bars' words, the accent colour's contrast, the
forms' targets, and the size of a 50-component page with 90 days each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from observe.v1 import status_pages_pb2 as pb

from core.status_pages import html
from core.status_pages.markdown import ALLOWED_TAGS, render_markdown
from core.status_pages.store import PageRow

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class Elements(HTMLParser):
    """The tags and attributes of an HTML fragment, as a browser would see them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def ts(at: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(at)
    return out


def page_row(**overrides: object) -> PageRow:
    fields: dict[str, object] = {
        "id": 1, "org_id": 1, "name": "Acme", "slug": "acme", "description": None, "custom_domain": None,
        "published": True, "groups": (), "history_days": 90, "show_maintenance": True, "accent_color": None,
        "password_hash": None, "created_at": NOW, "updated_at": NOW,
    }  # fmt: skip
    return PageRow(**{**fields, **overrides})  # type: ignore[arg-type]


def view(components: int = 2, days: int = 90, name: str = "Acme") -> pb.GetPublicStatusPageResponse:
    v = pb.GetPublicStatusPageResponse(status=pb.PUBLIC_PAGE_STATUS_OPERATIONAL)
    v.page.name, v.page.slug = name, "acme"
    group = v.groups.add(name="Core")
    for i in range(components):
        c = group.components.add(name=f"Component {i}", status=pb.PUBLIC_COMPONENT_STATUS_OPERATIONAL)
        c.uptime_percent = 99.95
        for k in range(days):
            day = c.days.add(date=(NOW.date() - timedelta(days=days - 1 - k)).isoformat())
            day.uptime_percent = 100.0
    v.updated_at.CopyFrom(ts(NOW))
    return v


# ---- Markdown ----------------------------------------------------------------------------


def test_markdown_keeps_formatting_and_safe_links() -> None:
    out = render_markdown("# Cause\n\n**Bold**, *it*, `code` and [the runbook](https://example.com/r).\n\n- one\n")
    assert "<h4>Cause</h4>" in out  # headings start below the incident's h3
    assert "<strong>Bold</strong>" in out
    assert "<em>it</em>" in out
    assert "<code>code</code>" in out
    assert '<a href="https://example.com/r" rel="nofollow noopener">the runbook</a>' in out
    assert "<li>one</li>" in out


def test_markdown_drops_scripts_raw_html_and_script_links() -> None:
    text = (
        "<script>alert(1)</script>\n\n<b onclick=x>raw</b> <iframe src=//evil.example></iframe>\n\n"
        "[click](javascript:alert(1)) [data](data:text/html;base64,PHNjcmlwdD4=) [vb](vbscript:x)\n\n"
        '<a href="javascript:alert(2)">html link</a>'
    )
    out = render_markdown(text)
    elements = Elements(out).found
    assert {tag for tag, _ in elements} == {"p"}  # no link survived, no raw tag got through
    assert all(attrs == {} for _, attrs in elements)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out  # shown as text, not run
    assert "&lt;b onclick=x&gt;raw&lt;/b&gt;" in out


def test_markdown_images_become_their_alt_text() -> None:
    out = render_markdown("![the diagram](https://evil.example/track.png) ![x](data:image/png;base64,AAAA)")
    assert {tag for tag, _ in Elements(out).found} <= ALLOWED_TAGS
    assert "<img" not in out
    assert "evil.example" not in out
    assert "the diagram" in out


# ---- the page ---------------------------------------------------------------------------------


def test_everything_written_by_people_is_escaped() -> None:
    v = view(name="<script>alert(1)</script>")
    v.groups[0].name = '"><img src=x>'
    inc = v.active_incidents.add(title="<b>down</b>", status="investigating", components=["<i>API</i>"])
    inc.updates.add(status="investigating", message="<script>x()</script>").created_at.CopyFrom(ts(NOW))
    inc.postmortem = "<script>y()</script> [ok](javascript:z())"
    m = v.maintenance.active.add(name="<u>db</u>", description="<em>soon</em>")
    m.starts_at.CopyFrom(ts(NOW))
    m.ends_at.CopyFrom(ts(NOW + timedelta(hours=1)))
    out = html.render_page(v, page_row(name="<script>alert(1)</script>"), "/status/acme").decode()
    assert "<script" not in out
    assert "<img" not in out
    for tag in ("<b>", "<i>", "<u>", "<em>", 'href="javascript'):
        assert tag not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "&lt;b&gt;down&lt;/b&gt;" in out


def test_links_and_forms_follow_the_base() -> None:
    on_slug = html.render_page(view(), page_row(), "/status/acme").decode()
    assert 'href="/status/acme/feed.xml"' in on_slug
    assert 'action="/status/acme/subscribe"' in on_slug
    on_domain = html.render_page(view(), page_row(custom_domain="status.acme.test"), "").decode()
    assert 'href="/feed.xml"' in on_domain
    assert 'action="/status/acme/subscribe"' in on_domain  # the form routes are under /status/ on any host
    form = html.render_password_form(page_row(), "", error=None).decode()
    assert 'action="/status/acme/unlock"' in form
    assert 'name="password"' in form
    assert "aria-invalid" not in form
    wrong = html.render_password_form(page_row(), "", error="That password is not right.").decode()
    assert "That password is not right." in wrong
    assert 'aria-invalid="true"' in wrong
    unsubscribe = html.render_unsubscribe_form(page_row(), "", '/status/acme/unsubscribe?token=a"b&c').decode()
    assert 'action="/status/acme/unsubscribe?token=a&#34;b&amp;c"' in unsubscribe
    assert "<button" in unsubscribe
    assert "No such status page" in html.render_not_found().decode()
    assert "Check your inbox" in html.render_notice(None, "", "Check your inbox", "…").decode()


def test_each_bar_says_its_day_in_words() -> None:
    day = pb.PublicDay(date="2026-11-03", uptime_percent=99.999, downtime_sec=1, maintenance_sec=3600)
    assert html.day_text(day) == "3 Nov 2026, 99.99% uptime, down for under a minute, in maintenance for 1 h"
    assert html.day_text(pb.PublicDay(date="2026-11-04")) == "4 Nov 2026, no data"
    assert html.day_class(pb.PublicDay(date="2026-11-04")) == "none"
    assert html.day_class(pb.PublicDay(date="d", uptime_percent=100)) == "up"
    assert html.day_class(pb.PublicDay(date="d", uptime_percent=100, maintenance_sec=60)) == "maint"
    assert html.day_class(pb.PublicDay(date="d", uptime_percent=99.5, downtime_sec=400)) == "minor"
    assert html.day_class(pb.PublicDay(date="d", uptime_percent=90, downtime_sec=8000)) == "major"
    out = html.render_page(view(components=1, days=3), page_row(), "/status/acme").decode()
    assert f"{NOW.day} Nov 2026, 100% uptime" in out
    assert "99.95% uptime" in out
    assert "No downtime" in out  # the legend


@pytest.mark.parametrize("accent", ["#ffe066", "#000000", "#777777", "#1d4ed8", "#ffffff", None, "red"])
def test_text_on_the_accent_colour_is_readable(accent: str | None) -> None:
    chosen = html.accent_for(accent)
    assert html.contrast(chosen.fill, chosen.on_fill) >= 4.5
    assert html.contrast(chosen.link, "#ffffff") >= 4.5
    if accent and accent.startswith("#"):
        assert chosen.fill == accent


def test_fifty_components_with_ninety_days_make_a_page_of_sensible_size() -> None:
    out = html.render_page(view(components=50, days=90), page_row(), "/status/acme")
    assert out.count(b"100% uptime") == 50 * 90
    assert len(out) < 400_000


def test_percent_and_duration_words() -> None:
    assert [html.percent(p) for p in (100, 99.999, 99.5, 12.345)] == ["100%", "99.99%", "99.5%", "12.34%"]
    assert [html.duration(s) for s in (5, 60, 3600, 3660, 90000)] == [
        "under a minute", "1 min", "1 h", "1 h 1 min", "1 d 1 h",
    ]  # fmt: skip
