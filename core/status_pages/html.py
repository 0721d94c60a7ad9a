"""The status page for people: server-rendered HTML from Jinja2 templates
(``templates/``, autoescaped), one layout for the page, its password form,
notices, the unsubscribe button and the not-found page.

No script and no asset from anywhere: the stylesheet is inline and the
uptime bars are plain elements, each carrying its day as text (shown on
hover, read by screen readers), so the page works without JavaScript under
the CSP the glue sends. Colour is never the only signal: statuses are
written out, bars differ in pattern too and a legend explains them. The
page's accent colour is used behind text only with black or white on it,
whichever contrasts more (at least 4.58:1 for any colour), and for links
only when it contrasts 4.5:1 with the white background.

``base`` is the path the page's links start from: ``/status/{slug}``, or
``""`` on the page's custom domain.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from observe.v1 import status_pages_pb2 as pb

from core.status_pages.markdown import render_markdown
from core.status_pages.store import PageRow

TEMPLATES = Path(__file__).resolve().parent / "templates"
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
DEFAULT_ACCENT = "#1d4ed8"
WHITE_BACKGROUND = "#ffffff"


@dataclass(frozen=True, slots=True)
class Label:
    """A status as shown: CSS class key and the words."""

    key: str
    text: str


PAGE_STATUS = {
    pb.PUBLIC_PAGE_STATUS_OPERATIONAL: Label("up", "All systems operational"),
    pb.PUBLIC_PAGE_STATUS_DEGRADED: Label("degraded", "Degraded performance"),
    pb.PUBLIC_PAGE_STATUS_PARTIAL_OUTAGE: Label("partial", "Partial outage"),
    pb.PUBLIC_PAGE_STATUS_MAJOR_OUTAGE: Label("major", "Major outage"),
    pb.PUBLIC_PAGE_STATUS_MAINTENANCE: Label("maintenance", "Under maintenance"),
}
COMPONENT_STATUS = {
    pb.PUBLIC_COMPONENT_STATUS_OPERATIONAL: Label("up", "Operational"),
    pb.PUBLIC_COMPONENT_STATUS_DOWN: Label("down", "Down"),
    pb.PUBLIC_COMPONENT_STATUS_MAINTENANCE: Label("maintenance", "Maintenance"),
    pb.PUBLIC_COMPONENT_STATUS_UNKNOWN: Label("unknown", "No data"),
}
UNKNOWN = Label("unknown", "No data")


# ---- formatting ---------------------------------------------------------------------


def percent(value: float) -> str:
    """Uptime with two decimals, never rounded up to 100 (99.999 is "99.99%")."""
    if value >= 100:
        return "100%"
    floored = math.floor(value * 100) / 100
    return f"{floored:.2f}".rstrip("0").rstrip(".") + "%"


def duration(seconds: int) -> str:
    """A length of time in words: "under a minute", "12 min", "2 h 5 min", "3 d 4 h"."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return "under a minute"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _when(ts: Timestamp) -> datetime:
    return datetime.fromtimestamp(ts.seconds, UTC)


def timestamp_text(ts: Timestamp) -> str:
    """ "30 Nov 2026, 14:05 UTC"."""
    at = _when(ts)
    return f"{at.day} {at:%b %Y, %H:%M} UTC"


def timestamp_iso(ts: Timestamp) -> str:
    return _when(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_text(day: pb.PublicDay) -> str:
    """What one uptime bar says: its date, uptime, downtime and maintenance."""
    try:
        d = date.fromisoformat(day.date)
        parts = [f"{d.day} {d:%b %Y}"]
    except ValueError:
        parts = [day.date]
    if day.HasField("uptime_percent"):
        parts.append(f"{percent(day.uptime_percent)} uptime")
    else:
        parts.append("no data")
    if day.downtime_sec > 0:
        parts.append(f"down for {duration(day.downtime_sec)}")
    if day.maintenance_sec > 0:
        parts.append(f"in maintenance for {duration(day.maintenance_sec)}")
    return ", ".join(parts)


def day_class(day: pb.PublicDay) -> str:
    """up, minor (some downtime, still 99 % up), major, maint or none."""
    if day.downtime_sec > 0 or (day.HasField("uptime_percent") and day.uptime_percent < 100):
        if day.HasField("uptime_percent") and day.uptime_percent >= 99:
            return "minor"
        return "major"
    if day.maintenance_sec > 0:
        return "maint"
    if day.HasField("uptime_percent"):
        return "up"
    return "none"


# ---- colour -------------------------------------------------------------------------


def _luminance(colour: str) -> float:
    def channel(hex2: str) -> float:
        c = int(hex2, 16) / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(colour[i : i + 2]) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two #rrggbb colours."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@dataclass(frozen=True, slots=True)
class Accent:
    """The accent colour, the text colour to write on it, and the link colour."""

    fill: str
    on_fill: str
    link: str


def accent_for(colour: str | None) -> Accent:
    fill = colour.lower() if colour and HEX_COLOUR.fullmatch(colour) else DEFAULT_ACCENT
    on_fill = "#ffffff" if contrast(fill, "#ffffff") >= contrast(fill, "#000000") else "#000000"
    link = fill if contrast(fill, WHITE_BACKGROUND) >= 4.5 else DEFAULT_ACCENT
    return Accent(fill, on_fill, link)


# ---- rendering ----------------------------------------------------------------------


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        percent=percent,
        duration=duration,
        when=timestamp_text,
        iso=timestamp_iso,
        day_text=day_text,
        day_class=day_class,
        incident_status=str.capitalize,
        component_status=lambda s: COMPONENT_STATUS.get(s, UNKNOWN),
        markdown=lambda text: Markup(render_markdown(text)),
    )
    return env


_ENV = _environment()


def _render(template: str, page: PageRow | None, base: str, **context: object) -> bytes:
    accent = accent_for(page.accent_color if page else None)
    home = (base or "/") if page else None
    form_base = (base or "/status/" + page.slug) if page else ""
    html = _ENV.get_template(template).render(page=page, accent=accent, home=home, form_base=form_base, **context)
    return html.encode("utf-8")


def render_page(view: pb.GetPublicStatusPageResponse, page: PageRow, base: str) -> bytes:
    """The status page: banner, incidents, maintenance, components with their bars, history, subscribe form."""
    return _render(
        "page.html",
        page,
        base,
        view=view,
        info=view.page,
        status=PAGE_STATUS.get(view.status, PAGE_STATUS[pb.PUBLIC_PAGE_STATUS_OPERATIONAL]),
        description=view.page.description if view.page.HasField("description") else page.description,
        history_days=max((len(c.days) for g in view.groups for c in g.components), default=page.history_days),
        feed=f"{base}/feed.xml",
        updated=view.updated_at if view.HasField("updated_at") else None,
    )


def render_password_form(page: PageRow, base: str, error: str | None) -> bytes:
    """The password form of a locked page (answered with 401); ``error`` says why the last try failed."""
    return _render("password.html", page, base, error=error)


def render_notice(page: PageRow | None, base: str, title: str, text: str) -> bytes:
    """A short page saying ``title`` and ``text``, with a link back to the status page."""
    return _render("notice.html", page, base, title=title, text=text)


def render_unsubscribe_form(page: PageRow | None, base: str, action: str) -> bytes:
    """One button that POSTs to ``action`` (a GET of the mail's link changes nothing).
    ``page`` None: the link's page was renamed or deleted; the link still works."""
    question = f"Stop getting e-mail about {page.name}?" if page else "Stop getting these e-mails?"
    return _render(
        "button.html", page, base, action=action, heading="Unsubscribe", question=question, button="Unsubscribe"
    )


def render_confirm_form(page: PageRow, base: str, action: str) -> bytes:
    """One button that POSTs to ``action``: mail scanners open links, so only a person's click confirms."""
    question = f"Get e-mail when {page.name} has an incident or planned maintenance?"
    return _render(
        "button.html",
        page,
        base,
        action=action,
        heading="Confirm your subscription",
        question=question,
        button="Confirm subscription",
    )


def render_not_found() -> bytes:
    return _render("not_found.html", None, "")
