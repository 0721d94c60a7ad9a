"""E-mail subscriptions of status pages: double opt-in, confirm and unsubscribe by signed link, and who is
told about what.

:class:`Subscriptions` is what the public routes call. ``subscribe`` answers the same for every address
(no enumeration): a new address gets a pending row and a confirmation mail; a pending one gets the mail
again; a confirmed one gets nothing, and never a second row. ``confirm`` and ``unsubscribe`` take the
signed links of the mails (:class:`~core.status_pages.access.PageTokens`); a forged, expired or foreign
link is NOT_FOUND. An unsubscribe deletes the row, and with it the subscriber's mail still waiting in the
outbox; ids are never reused, so its old links die with it.

The notices, written in the transaction of the change they tell of (the incident engine and service,
the maintenance service), one ``alert_outbox`` row per confirmed subscriber (channel ``subscriber``):

- :func:`queue_incident_notice`: an incident opened, got a public update, resolved or reopened, to the
  subscribers of every published page that shows it: pages with the incident's monitor among their
  components, and for a manual incident without a monitor every published page of the organisation
  (CONTRACT.md, "Decided details");
- :func:`queue_maintenance_notices`: a window scheduled, changed or cancelled, to the subscribers of
  published pages that show maintenance and have a component the window covers.

A notice holds public fields only (titles, statuses, update messages, times); the mail is written by
:mod:`core.alerts.subscriber`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.alerts import outbox
from core.errors import Violations, not_found
from core.incidents.tables import incident_updates, incidents
from core.status_pages import projection, store
from core.status_pages.access import PageTokens
from core.status_pages.store import PageRow
from core.status_pages.tables import status_page_monitors as spm
from core.status_pages.tables import status_page_subscribers as sps
from core.status_pages.tables import status_pages as sp
from core.storage import tables as t
from core.storage.db import Database

# Subscriber mail is due a moment after the incident change, so the owners'
# own alerts of the same change (and of other organisations then) are
# claimed before it.
SUBSCRIBER_DELAY = timedelta(seconds=2)

CONFIRM_EVENT = "subscription.confirm"
MAX_EMAIL_LEN = 254
# The HTML5 form's e-mail rule, which the API's (buf.validate ``email``) follows too.
_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)


def normalise_email(email: str) -> str:
    """The address as stored: trimmed and lower-cased, so one mailbox is one subscriber per page."""
    return email.strip().lower()


class Subscriptions:
    def __init__(self, db: Database, tokens: PageTokens, public_url: str, *, notify: Callable[[], None]) -> None:
        self.notify = notify  # wakes the alert dispatcher after outbox rows commit
        self.db = db
        self.tokens = tokens
        self.public_url = public_url

    def plausible_email(self, email: str) -> bool:
        address = email.strip()
        return len(address) <= MAX_EMAIL_LEN and _EMAIL.fullmatch(address) is not None

    async def subscribe(self, page: PageRow, email: str) -> None:
        """A pending subscription and its confirmation mail; nothing for a confirmed address."""
        if not self.plausible_email(email):
            v = Violations()
            v.add("email", "invalid_string", "Expected an e-mail address")
            v.raise_if_any()
        address = normalise_email(email)
        now = clock.now()
        async with self.db.write() as conn:
            # Two subscribes racing make one row: the second finds the first's.
            add = self.db.upsert(sps).values(
                page_id=page.id, org_id=page.org_id, email=address, confirmed=False, created_at=now
            )
            await conn.execute(add.on_conflict_do_nothing(index_elements=[sps.c.page_id, sps.c.email]))
            row = (
                await conn.execute(
                    select(sps.c.id, sps.c.confirmed).where(sps.c.page_id == page.id, sps.c.email == address)
                )
            ).one()
            if row.confirmed:
                return
            await outbox.enqueue_subscribers(
                conn,
                org_id=page.org_id,
                subscriber_ids=[row.id],
                incident_id=None,
                event=CONFIRM_EVENT,
                notice={},
                now=now,
            )
        self.notify()

    async def confirm(self, page: PageRow, token: str) -> None:
        """Confirms the subscription the link names (again: no change); NOT_FOUND for a link that is
        forged, expired, of another page or of a subscription that is gone."""
        subscriber_id = self.tokens.confirmed_subscriber(token)
        if subscriber_id is None:
            raise not_found("subscription")
        async with self.db.write() as conn:
            mine = (sps.c.id == subscriber_id) & (sps.c.page_id == page.id)
            await conn.execute(
                update(sps).where(mine, sps.c.confirmed.is_(False)).values(confirmed=True, confirmed_at=clock.now())
            )
            if (await conn.execute(select(sps.c.id).where(mine))).first() is None:
                raise not_found("subscription")

    async def page_of_link(self, token: str) -> int | None:
        """The page of the subscription an unsubscribe link names; None when it is gone. NOT_FOUND for
        a forged link."""
        subscriber_id = self.tokens.unsubscribed_subscriber(token)
        if subscriber_id is None:
            raise not_found("subscription")
        async with self.db.read() as conn:
            return (await conn.execute(select(sps.c.page_id).where(sps.c.id == subscriber_id))).scalar()

    async def unsubscribe(self, page: PageRow | None, token: str) -> None:
        """Ends the subscription the link names (``page``: the page whose route took the link, None for
        the API's). A subscription already gone is no error: a mail client may post twice. NOT_FOUND for
        a forged link, or one of another page's subscriber."""
        subscriber_id = self.tokens.unsubscribed_subscriber(token)
        if subscriber_id is None:
            raise not_found("subscription")
        async with self.db.write() as conn:
            query = delete(sps).where(sps.c.id == subscriber_id)
            if page is not None:
                query = query.where(sps.c.page_id == page.id)
            if (await conn.execute(query.returning(sps.c.id))).first() is not None or page is None:
                return
            if (await conn.execute(select(sps.c.id).where(sps.c.id == subscriber_id))).first() is not None:
                raise not_found("subscription")  # another page's subscriber


# ---- notices -----------------------------------------------------------------------------------------


def _iso(at: datetime | None) -> str | None:
    return clock.to_timestamp(at).ToJsonString() if at is not None else None


async def _confirmed_subscribers(conn: AsyncConnection, pages: Any) -> dict[int, list[int]]:
    """Confirmed subscribers of the pages the ``pages`` subquery selects: page id → subscriber ids."""
    rows = await conn.execute(
        select(sps.c.page_id, sps.c.id).where(sps.c.page_id.in_(pages), sps.c.confirmed.is_(True)).order_by(sps.c.id)
    )
    out: dict[int, list[int]] = {}
    for page_id, subscriber_id in rows:
        out.setdefault(page_id, []).append(subscriber_id)
    return out


async def queue_incident_notice(conn: AsyncConnection, incident_id: int, event: str, now: datetime) -> int:
    """Queues ``event`` (incident.opened/updated/resolved/reopened) about the incident as it is now, with
    its newest public update, for the subscribers of the pages that show it; returns the rows written."""
    row = (await conn.execute(select(incidents).where(incidents.c.id == incident_id))).one_or_none()
    if row is None or row.log_alert_id is not None:  # a log alert's incident is on no page
        return 0
    pages = select(sp.c.id).where(sp.c.org_id == row.org_id, sp.c.published.is_(True))
    if row.monitor_id is not None:
        pages = pages.where(sp.c.id.in_(select(spm.c.page_id).where(spm.c.monitor_id == row.monitor_id)))
    audience = await _confirmed_subscribers(conn, pages)
    if not audience:
        return 0
    u = incident_updates.c
    newest = (
        await conn.execute(
            select(u.status, u.message, u.author_user_id, u.created_at)
            .where(u.incident_id == incident_id)
            .order_by(u.id.desc())
            .limit(1)
        )
    ).first()
    names = await _component_names(conn, list(audience), row.monitor_id)
    written = 0
    for page_id, subscriber_ids in audience.items():
        # As the page shows it: the engine's texts name the monitor as its owners
        # do and quote the check's error (hosts, addresses), so the public gets
        # neutral ones with the page's name for the component.
        component = names.get(page_id)
        automatic = bool(row.automatic) and component is not None
        update = None
        if newest is not None:
            message = newest.message
            if automatic and component is not None and newest.author_user_id is None:
                message = projection.public_update(component, newest.status)
            update = {"status": newest.status, "message": message, "at": _iso(newest.created_at)}
        notice: dict[str, Any] = {
            "incident": {
                "title": projection.public_title(component) if automatic and component else row.title,
                "status": row.status,
                "startedAt": _iso(row.started_at),
                "resolvedAt": _iso(row.resolved_at),
                "update": update,
            }
        }
        written += await outbox.enqueue_subscribers(
            conn,
            org_id=row.org_id,
            subscriber_ids=subscriber_ids,
            incident_id=incident_id,
            event=event,
            notice=notice,
            now=now,
            delay=SUBSCRIBER_DELAY,
        )
    return written


async def _component_names(conn: AsyncConnection, page_ids: list[int], monitor_id: int | None) -> dict[int, str]:
    """Page id → the name the page gives the monitor (its displayName there, else the monitor's name)."""
    if monitor_id is None or not page_ids:
        return {}
    monitor_name = (await conn.execute(select(t.monitors.c.name).where(t.monitors.c.id == monitor_id))).scalar()
    out: dict[int, str] = {}
    for page_id, groups in await conn.execute(select(sp.c.id, sp.c.groups).where(sp.c.id.in_(page_ids))):
        shown = [c for g in store.groups_from_json(groups) for c in g.components if c.monitor_id == monitor_id]
        name = next((c.display_name for c in shown if c.display_name), monitor_name)
        if name:
            out[page_id] = name
    return out


@dataclass(frozen=True, slots=True)
class WindowNotice:
    """A maintenance window as subscribers hear of it: its next occurrence (the current one while it is
    active) and what it covers."""

    name: str
    description: str | None
    starts_at: datetime
    ends_at: datetime
    recurring: bool
    monitor_ids: frozenset[int]
    tags: frozenset[str]
    all_monitors: bool

    @classmethod
    def of(cls, window: dict[str, Any], starts_at: datetime, ends_at: datetime) -> WindowNotice:
        """From a window's settings in API names (core.maintenance.store.settings) and its occurrence."""
        return cls(
            name=window["name"],
            description=window.get("description"),
            starts_at=starts_at,
            ends_at=ends_at,
            recurring=bool(window.get("rrule")),
            monitor_ids=frozenset(window.get("monitorIds") or ()),
            tags=frozenset(window.get("tags") or ()),
            all_monitors=bool(window.get("allMonitors")),
        )

    def notice(self) -> dict[str, Any]:
        return {
            "maintenance": {
                "name": self.name,
                "description": self.description,
                "startsAt": _iso(self.starts_at),
                "endsAt": _iso(self.ends_at),
                "recurring": self.recurring,
            }
        }


def _pages_covered(org_id: int, window: WindowNotice) -> Any | None:
    """The published pages showing maintenance with a component ``window`` covers (a subquery); None: none."""
    covered = select(spm.c.page_id)
    if not window.all_monitors:
        tags = t.monitor_tags.c
        conditions = []
        if window.monitor_ids:
            conditions.append(spm.c.monitor_id.in_(sorted(window.monitor_ids)))
        if window.tags:
            tagged = select(tags.monitor_id).where(tags.org_id == org_id, tags.tag.in_(sorted(window.tags)))
            conditions.append(spm.c.monitor_id.in_(tagged))
        if not conditions:
            return None
        covered = covered.where(or_(*conditions))
    return select(sp.c.id).where(
        sp.c.org_id == org_id, sp.c.published.is_(True), sp.c.show_maintenance.is_(True), sp.c.id.in_(covered)
    )


async def _audience(conn: AsyncConnection, org_id: int, window: WindowNotice | None) -> dict[int, list[int]]:
    pages = _pages_covered(org_id, window) if window is not None else None
    return await _confirmed_subscribers(conn, pages) if pages is not None else {}


async def queue_maintenance_notices(
    conn: AsyncConnection, org_id: int, *, before: WindowNotice | None, after: WindowNotice | None, now: datetime
) -> int:
    """Tells subscribers of a window's change: ``before`` and ``after`` are the window as it was and is,
    None when it did not exist or has no occurrence left. Pages covered now hear ``maintenance.scheduled``
    (new to them) or ``maintenance.updated`` (its name, description or times changed); pages covered only
    before hear ``maintenance.cancelled``. Returns the rows written."""
    if before == after:
        return 0
    was, now_shown = await _audience(conn, org_id, before), await _audience(conn, org_id, after)
    # Pages covered before and after hear of a change only if what they are told changed (not its coverage).
    changed = before is not None and after is not None and before.notice() != after.notice()
    queued = 0
    groups: Iterable[tuple[str, WindowNotice | None, list[int]]] = (
        ("maintenance.updated", after, [s for p, ids in now_shown.items() if p in was and changed for s in ids]),
        ("maintenance.scheduled", after, [s for p, ids in now_shown.items() if p not in was for s in ids]),
        ("maintenance.cancelled", before, [s for p, ids in was.items() if p not in now_shown for s in ids]),
    )
    for event, window, subscriber_ids in groups:
        if window is None or not subscriber_ids:
            continue
        queued += await outbox.enqueue_subscribers(
            conn,
            org_id=org_id,
            subscriber_ids=subscriber_ids,
            incident_id=None,
            event=event,
            notice=window.notice(),
            now=now,
            delay=SUBSCRIBER_DELAY,
        )
    return queued
