"""The public view of a status page (GetPublicStatusPageResponse), read from
the database in a handful of queries: the components' monitors and current
status, their daily rollups and status events over the history days, the
organisation's maintenance windows and the incidents the page shows.

Nothing private goes in: no ids, URLs, hosts, alert settings or incident
causes. Components are named as the page names them; the texts the incident
engine writes (which name the monitor as its owners see it and quote the
failing check's error) are replaced by neutral ones with the component's
name, while what people wrote on the timeline is shown as written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from observe.v1 import status_pages_pb2 as pb
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.incidents.tables import incident_updates, incidents
from core.maintenance.calendar import MaintenanceCalendar
from core.maintenance.store import schedule_of
from core.maintenance.tables import maintenance_windows as mw
from core.monitors.store import shown_status
from core.status_pages import uptime
from core.status_pages.store import PageRow
from core.storage import tables as t

DAY_LEVEL = 2  # check_rollups level of daily buckets (core.monitors.rollups.LEVELS)
UPCOMING = timedelta(days=30)
RECENT_INCIDENTS = 50
# Occurrences of one window listed as upcoming, at most (an hourly rule has 720 in 30 days).
UPCOMING_PER_WINDOW = 50

_COMPONENT_STATUS = {
    "up": pb.PUBLIC_COMPONENT_STATUS_OPERATIONAL,
    "down": pb.PUBLIC_COMPONENT_STATUS_DOWN,
    "maintenance": pb.PUBLIC_COMPONENT_STATUS_MAINTENANCE,
}


@dataclass(frozen=True, slots=True)
class Built:
    """A page's view and the first instant at which it goes stale by itself
    (a maintenance occurrence of its components starts or ends, the day turns)."""

    message: pb.GetPublicStatusPageResponse
    stale_at: datetime
    monitor_ids: frozenset[int]


@dataclass(slots=True)
class _Monitor:
    id: int
    name: str  # as the page names it (its first component)
    heartbeat: bool
    paused: bool
    status: str
    paused_since: datetime


def _ts(value: datetime) -> Any:
    return clock.to_timestamp(value)


async def build(
    conn: AsyncConnection, page: PageRow, calendar: MaintenanceCalendar, now: datetime | None = None
) -> Built:
    """The public view of ``page`` as of ``now`` (default: the current time)."""
    now = now or datetime.now(UTC)
    starts = uptime.day_starts(now, page.history_days)
    since = starts[0]
    ids = page.monitor_ids
    monitors = await _monitors(conn, page, ids)
    windows, stale_at = await _maintenance(conn, page, ids, since, now)
    covering: dict[int, list[uptime.Interval]] = {m: [] for m in ids}
    for w in windows:
        for m in w.covered:
            covering[m].extend(w.occurrences)
    rollups = await _rollups(conn, ids, since)
    events = await _events(conn, ids, since)

    msg = pb.GetPublicStatusPageResponse()
    msg.page.name, msg.page.slug = page.name, page.slug
    if page.description is not None:
        msg.page.description = page.description
    if page.accent_color is not None:
        msg.page.accent_color = page.accent_color

    statuses: list[int] = []
    for group in page.groups:
        out_group = msg.groups.add(name=group.name)
        for spec in group.components:
            mon = monitors.get(spec.monitor_id)
            if mon is None:
                continue
            comp = out_group.components.add(name=spec.display_name or mon.name)
            comp.status = _status(mon, page.org_id, calendar)  # type: ignore[assignment]
            statuses.append(comp.status)
            _fill_history(comp, mon, starts, now, events.get(mon.id, []), covering[mon.id], rollups)

    active, recent = await _incidents(conn, page, monitors, now)
    msg.active_incidents.extend(active)
    msg.recent_incidents.extend(recent)
    msg.maintenance.SetInParent()
    if page.show_maintenance:
        _fill_maintenance(msg.maintenance, windows, monitors, now)
    msg.status = _overall(statuses, bool(active))  # type: ignore[assignment]
    msg.updated_at.CopyFrom(_ts(now))
    stale_at = min(stale_at, starts[-1] + uptime.DAY)
    return Built(msg, stale_at, frozenset(ids))


# ---- components --------------------------------------------------------------


async def _monitors(conn: AsyncConnection, page: PageRow, ids: list[int]) -> dict[int, _Monitor]:
    if not ids:
        return {}
    m, s = t.monitors.c, t.monitor_state.c
    rows = await conn.execute(
        select(m.id, m.name, m.type, m.paused, m.updated_at, s.status)
        .outerjoin(t.monitor_state, s.monitor_id == m.id)
        .where(m.id.in_(ids), m.org_id == page.org_id)
    )
    names: dict[int, str] = {}
    for g in page.groups:
        for c in g.components:
            if c.display_name and c.monitor_id not in names:
                names[c.monitor_id] = c.display_name
    return {
        r.id: _Monitor(
            r.id, names.get(r.id, r.name), r.type == "heartbeat", bool(r.paused), r.status or "pending", r.updated_at
        )
        for r in rows
    }


def _status(mon: _Monitor, org_id: int, calendar: MaintenanceCalendar) -> int:
    """A component's status from the monitor's shown one (paused and pending: unknown)."""
    shown = shown_status(mon.paused, mon.status, org_id, mon.id, calendar)
    return _COMPONENT_STATUS.get(shown, pb.PUBLIC_COMPONENT_STATUS_UNKNOWN)


def _overall(statuses: Sequence[int], incident_open: bool) -> int:
    down = sum(1 for s in statuses if s == pb.PUBLIC_COMPONENT_STATUS_DOWN)
    if down:
        return pb.PUBLIC_PAGE_STATUS_MAJOR_OUTAGE if down == len(statuses) else pb.PUBLIC_PAGE_STATUS_PARTIAL_OUTAGE
    if incident_open:
        return pb.PUBLIC_PAGE_STATUS_DEGRADED
    if any(s == pb.PUBLIC_COMPONENT_STATUS_MAINTENANCE for s in statuses):
        return pb.PUBLIC_PAGE_STATUS_MAINTENANCE
    return pb.PUBLIC_PAGE_STATUS_OPERATIONAL


async def _rollups(
    conn: AsyncConnection, ids: list[int], since: datetime
) -> dict[int, dict[datetime, tuple[int, int]]]:
    out: dict[int, dict[datetime, tuple[int, int]]] = {m: {} for m in ids}
    if not ids:
        return out
    r = t.check_rollups.c
    rows = await conn.execute(
        select(r.monitor_id, r.bucket_start, r.checks, r.up_checks).where(
            r.level == DAY_LEVEL, r.monitor_id.in_(ids), r.bucket_start >= since
        )
    )
    for monitor_id, start, checks, up in rows:
        out[monitor_id][start.astimezone(UTC)] = (checks, up)
    return out


async def _events(conn: AsyncConnection, ids: list[int], since: datetime) -> dict[int, list[uptime.Event]]:
    """Each monitor's status changes since ``since``, after the last one before it (its status then)."""
    out: dict[int, list[uptime.Event]] = {}
    if not ids:
        return out
    e = t.monitor_events.c
    before = select(func.max(e.id)).where(e.monitor_id.in_(ids), e.at < since).group_by(e.monitor_id).scalar_subquery()
    rows = await conn.execute(
        select(e.monitor_id, e.at, e.to_status)
        .where(e.monitor_id.in_(ids), or_(e.at >= since, e.id.in_(before)))
        .order_by(e.id)
    )
    for monitor_id, at, to_status in rows:
        out.setdefault(monitor_id, []).append(uptime.Event(max(at.astimezone(UTC), since), to_status))
    return out


def _fill_history(
    comp: pb.PublicComponent,
    mon: _Monitor,
    starts: list[datetime],
    now: datetime,
    events: list[uptime.Event],
    maintenance: list[uptime.Interval],
    rollups: dict[int, dict[datetime, tuple[int, int]]],
) -> None:
    # A paused monitor's status no longer moves: its last state ends when it was paused.
    open_until = min(now, max(mon.paused_since, events[-1].at)) if mon.paused and events else now
    hist = uptime.history(
        starts,
        now,
        down=uptime.down_intervals(events, open_until),
        maintenance=uptime.merged(maintenance),
        rollups=None if mon.heartbeat else rollups.get(mon.id, {}),
        known_from=events[0].at if events else None,
    )
    if hist.uptime_percent is not None:
        comp.uptime_percent = hist.uptime_percent
    for day in hist.days:
        out = comp.days.add(date=day.date, downtime_sec=day.downtime_sec, maintenance_sec=day.maintenance_sec)
        if day.uptime_percent is not None:
            out.uptime_percent = day.uptime_percent


# ---- maintenance -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Window:
    name: str
    description: str | None
    covered: list[int]  # the page's monitors it covers, in page order
    occurrences: list[uptime.Interval]  # from the history's start to 30 days ahead


async def _maintenance(
    conn: AsyncConnection, page: PageRow, ids: list[int], since: datetime, now: datetime
) -> tuple[list[_Window], datetime]:
    """The org's windows covering any of the page's monitors, with their
    occurrences; and the next instant one of them starts or ends."""
    stale_at = now + UPCOMING
    if not ids:
        return [], stale_at
    rows = (await conn.execute(select(mw).where(mw.c.org_id == page.org_id).order_by(mw.c.id))).all()
    if not rows:
        return [], stale_at
    tags: dict[int, set[str]] = {}
    if any(json.loads(r.tags) for r in rows):
        c = t.monitor_tags.c
        for monitor_id, tag in await conn.execute(select(c.monitor_id, c.tag).where(c.monitor_id.in_(ids))):
            tags.setdefault(monitor_id, set()).add(tag)
    windows: list[_Window] = []
    for r in rows:
        by_id, by_tag = set(json.loads(r.monitor_ids)), set(json.loads(r.tags))
        covered = [m for m in ids if r.all_monitors or m in by_id or tags.get(m, set()) & by_tag]
        if not covered:
            continue
        occurrences = [(o.starts_at, o.ends_at) for o in schedule_of(r).overlapping(since, now + UPCOMING)]
        for start, end in occurrences:
            for bound in (start, end):
                if now < bound < stale_at:
                    stale_at = bound
        if occurrences:
            windows.append(_Window(r.name, r.description, covered, occurrences))
    return windows, stale_at


def _fill_maintenance(
    out: pb.PublicMaintenanceSet, windows: list[_Window], monitors: dict[int, _Monitor], now: datetime
) -> None:
    active: list[tuple[datetime, pb.PublicMaintenance]] = []
    upcoming: list[tuple[datetime, pb.PublicMaintenance]] = []
    for w in windows:
        names = list(dict.fromkeys(monitors[m].name for m in w.covered if m in monitors))
        listed = 0
        for start, end in w.occurrences:
            if end <= now or start > now + UPCOMING:
                continue
            item = pb.PublicMaintenance(name=w.name, starts_at=_ts(start), ends_at=_ts(end), components=names)
            if w.description is not None:
                item.description = w.description
            if start <= now:
                active.append((start, item))
            elif listed < UPCOMING_PER_WINDOW:
                upcoming.append((start, item))
                listed += 1
    out.active.extend(item for _, item in sorted(active, key=lambda p: p[0]))
    out.upcoming.extend(item for _, item in sorted(upcoming, key=lambda p: p[0]))


# ---- incidents ---------------------------------------------------------------


async def _incidents(
    conn: AsyncConnection, page: PageRow, monitors: dict[int, _Monitor], now: datetime
) -> tuple[list[pb.PublicIncident], list[pb.PublicIncident]]:
    """Open incidents, newest first; those resolved within the history days,
    newest first (at most 50). Those of the page's monitors, and the org's
    incidents without a monitor."""
    i = incidents.c
    # Manual incidents show on every page; a log alert's are internal (logs are nobody's component).
    shown: ColumnElement[bool] = and_(i.monitor_id.is_(None), i.log_alert_id.is_(None))
    if monitors:
        shown = or_(shown, i.monitor_id.in_(list(monitors)))
    recent_since = now - timedelta(days=page.history_days)
    base = select(i.id, i.monitor_id, i.title, i.status, i.automatic, i.started_at, i.resolved_at, i.postmortem).where(
        i.org_id == page.org_id, shown
    )
    open_rows = (
        await conn.execute(base.where(i.resolved_at.is_(None)).order_by(i.started_at.desc(), i.id.desc()))
    ).all()
    done_rows = (
        await conn.execute(
            base.where(and_(i.resolved_at.is_not(None), i.resolved_at >= recent_since))
            .order_by(i.resolved_at.desc(), i.id.desc())
            .limit(RECENT_INCIDENTS)
        )
    ).all()
    ids = [r.id for r in (*open_rows, *done_rows)]
    timeline: dict[int, list[Any]] = {x: [] for x in ids}
    if ids:
        u = incident_updates.c
        for row in await conn.execute(
            select(u.incident_id, u.status, u.message, u.author_user_id, u.created_at)
            .where(u.incident_id.in_(ids))
            .order_by(u.id)
        ):
            timeline[row.incident_id].append(row)
    return (
        [_incident(r, timeline[r.id], monitors, now) for r in open_rows],
        [_incident(r, timeline[r.id], monitors, now) for r in done_rows],
    )


def public_title(component: str) -> str:
    """What the public reads for an incident the engine opened (its own title names the monitor as its owners do)."""
    return f"{component} is down"


def public_update(component: str, status: str) -> str:
    """What the public reads for an update the engine wrote (its own quotes the failing check's error)."""
    return f"{component} is up again." if status == "resolved" else f"{component} is not responding."


def _incident(row: Any, updates: list[Any], monitors: dict[int, _Monitor], now: datetime) -> pb.PublicIncident:
    mon = monitors.get(row.monitor_id) if row.monitor_id is not None else None
    started = row.started_at.astimezone(UTC)
    resolved = row.resolved_at.astimezone(UTC) if row.resolved_at is not None else None
    # The engine's texts name the monitor as its owners do and quote the check's error.
    machine = bool(row.automatic) and mon is not None
    out = pb.PublicIncident(
        title=public_title(mon.name) if machine and mon else row.title,
        status=row.status,
        components=[mon.name] if mon else [],
        started_at=_ts(started),
        duration_sec=max(0, int(((resolved or now) - started).total_seconds())),
    )
    if resolved is not None:
        out.resolved_at.CopyFrom(_ts(resolved))
    if row.postmortem:
        out.postmortem = row.postmortem
    for u in updates:
        message = u.message
        if machine and mon and u.author_user_id is None:
            message = public_update(mon.name, u.status)
        out.updates.add(status=u.status, message=message, created_at=_ts(u.created_at.astimezone(UTC)))
    return out
