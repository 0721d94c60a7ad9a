"""The Atom feed (RFC 4287) of a status page: one entry per incident, active
or recent, with its public timeline, and one per maintenance occurrence,
under way or upcoming.

In: the page's public view (what the JSON route serves, so nothing private
can reach the feed), the page and the two URLs. Out: the document as UTF-8.

Built with ``xml.etree.ElementTree`` rather than a template: the document is
a tree, so it is well-formed and every text escaped by construction, with no
template whose every ``{{ }}`` must be right. The only thing left to do by
hand is dropping the few characters XML 1.0 cannot carry at all.

Ids are ``urn:uuid:`` names derived from a digest of the page (its id and
creation time) and what the entry is about (its kind and start), so they
stay the same across requests, renames and edits, and show no id in clear.
Dates: an incident is published when it started and updated at its latest
update or resolution; a maintenance entry is dated by its start (the view
knows no announcement time, and its start is what matters to a reader). The
feed's ``updated`` is the latest of these that has happened, or the page's
own last change if later.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from observe.v1 import status_pages_pb2 as pb

from core import clock
from core.status_pages.store import PageRow

ATOM = "http://www.w3.org/2005/Atom"
_NAMESPACE = uuid.UUID("5d0c1a2e-8f43-4c55-9e7b-0b5e3f1f7a61")  # of observe's feed ids; never change it
# Characters XML 1.0 forbids (C0 controls other than tab, LF and CR; lone
# surrogates; U+FFFE and U+FFFF): ElementTree would write them and make the
# document ill-formed, so they are dropped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _when(ts: Timestamp) -> datetime:
    return clock.from_timestamp(ts)


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _human(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: _clean(v) for k, v in attrs.items()})
    if text is not None:
        el.text = _clean(text)
    return el


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: str  # "incident" or "maintenance": with start, what the id is derived from
    start: datetime
    title: str
    published: datetime
    updated: datetime
    content: ET.Element  # an HTML fragment, sent escaped as type="html"
    categories: tuple[str, ...]


def _page_key(page: PageRow) -> str:
    return f"{page.id}:{page.created_at.timestamp():.6f}"


def _urn(*parts: str) -> str:
    """A name-based (version 5) UUID of ``parts``: the same parts, the same id."""
    return uuid.uuid5(_NAMESPACE, "\0".join(parts)).urn


def _components_line(parent: ET.Element, components: Iterable[str]) -> None:
    names = list(components)
    if names:
        _sub(parent, "p", "Affects: " + ", ".join(names))


def _incident(incident: pb.PublicIncident) -> _Entry:
    started = _when(incident.started_at)
    times = [started, *(_when(u.created_at) for u in incident.updates)]
    if incident.HasField("resolved_at"):
        times.append(_when(incident.resolved_at))
    status = incident.status.capitalize()
    div = ET.Element("div")
    _sub(div, "p", f"Status: {status}. Started {_human(started)}.")
    _components_line(div, incident.components)
    timeline = _sub(div, "ul")
    for update in reversed(incident.updates):  # newest first, as on the page
        at = _when(update.created_at)
        item = _sub(timeline, "li")
        _sub(item, "strong", update.status.capitalize()).tail = " — "
        _sub(item, "time", _human(at), datetime=_rfc3339(at)).tail = " — "
        _sub(item, "span", update.message)
    if incident.HasField("postmortem"):
        _sub(div, "h3", "Postmortem")
        _sub(div, "pre", incident.postmortem)
    return _Entry("incident", started, incident.title, started, max(times), div, ("incident", incident.status))


def _maintenance(window: pb.PublicMaintenance, *, active: bool) -> _Entry:
    starts, ends = _when(window.starts_at), _when(window.ends_at)
    div = ET.Element("div")
    state = "In progress" if active else "Scheduled"
    _sub(div, "p", f"{state}: from {_human(starts)} to {_human(ends)}.")
    _components_line(div, window.components)
    if window.HasField("description"):
        _sub(div, "p", window.description)
    title = f"{'Maintenance in progress' if active else 'Scheduled maintenance'}: {window.name}"
    return _Entry("maintenance", starts, title, starts, starts, div, ("maintenance",))


def _entries(view: pb.GetPublicStatusPageResponse) -> list[_Entry]:
    entries = [_incident(i) for i in (*view.active_incidents, *view.recent_incidents)]
    entries += [_maintenance(m, active=True) for m in view.maintenance.active]
    entries += [_maintenance(m, active=False) for m in view.maintenance.upcoming]
    return entries


def _ids(entries: list[_Entry], page_key: str) -> list[str]:
    """Each entry's id. Two entries of a kind starting in the same second
    (rare) are told apart by their title's order among them."""
    order = sorted(range(len(entries)), key=lambda i: (entries[i].kind, entries[i].start, entries[i].title))
    seen: Counter[tuple[str, datetime]] = Counter()
    ids = [""] * len(entries)
    for i in order:
        e = entries[i]
        n = seen[(e.kind, e.start)]
        seen[(e.kind, e.start)] += 1
        ids[i] = _urn(page_key, e.kind, f"{e.start.timestamp():.0f}", str(n))
    return ids


def render_feed(view: pb.GetPublicStatusPageResponse, page: PageRow, page_url: str, feed_url: str) -> bytes:
    """The page's Atom feed, entries newest first (by ``updated``)."""
    now = _when(view.updated_at) if view.HasField("updated_at") else clock.now()
    entries = _entries(view)
    ids = _ids(entries, _page_key(page))
    feed = ET.Element("feed", xmlns=ATOM)
    _sub(feed, "id", _urn(_page_key(page)))
    _sub(feed, "title", view.page.name or page.name, type="text")
    if view.page.HasField("description"):
        _sub(feed, "subtitle", view.page.description, type="text")
    happened = [e.updated for e in entries if e.updated <= now]
    _sub(feed, "updated", _rfc3339(max([page.updated_at, *happened])))
    author = _sub(feed, "author")
    _sub(author, "name", view.page.name or page.name)
    _sub(feed, "link", rel="alternate", type="text/html", href=page_url)
    _sub(feed, "link", rel="self", type="application/atom+xml", href=feed_url)
    _sub(feed, "generator", "observe")
    for entry, entry_id in sorted(zip(entries, ids, strict=True), key=lambda p: p[0].updated, reverse=True):
        el = _sub(feed, "entry")
        _sub(el, "id", entry_id)
        _sub(el, "title", entry.title, type="text")
        _sub(el, "link", rel="alternate", type="text/html", href=page_url)
        _sub(el, "published", _rfc3339(entry.published))
        _sub(el, "updated", _rfc3339(entry.updated))
        for term in entry.categories:
            _sub(el, "category", term=term)
        # type="html": the fragment, serialised, is the element's text, so it is escaped once more.
        _sub(el, "content", ET.tostring(entry.content, encoding="unicode", method="html"), type="html")
    data: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return data
