"""Monitor badges: a shields-style SVG of a monitor's status, or of its
uptime over 24 h, 7, 30 or 90 days.

Only a monitor that shows itself publicly has one: one with ``publicBadge``
set, or one shown on a published status page that is open (no password: a
locked page's components are not public, so its monitors' badges are not
either). Any other id, or one of no monitor, has none (``render`` answers
None: NOT_FOUND), so a badge URL tells nothing of monitors that are not public.

Status reads as the monitor API shows it: paused, else maintenance while a
window covers the monitor (when given the maintenance calendar), else its
checked status (pending until the first result). Uptime is up checks over
checks in the period's rollups, read at the same resolution as the monitor's
stats (core.monitors.history): 5-minute buckets for 24 h, hourly for 7 days,
daily for 30 and 90. Maintenance time is not in the rollups, so not in it.

Each badge is kept in memory for up to 60 s (the route says
``Cache-Control: public, max-age=60`` too): a badge embedded in a busy
README costs a read a minute. So a badge may show a change, or stay
reachable after its monitor stops being public, up to a minute late. "No
badge" is not kept: it costs one indexed read, and a monitor made public
shows its badge at once.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.monitors.history import WINDOWS
from core.monitors.rollups import bucket_start
from core.monitors.store import shown_status
from core.status_pages.badge_svg import STYLES, render_badge
from core.status_pages.tables import status_page_monitors as spm
from core.status_pages.tables import status_pages as sp
from core.storage import tables as t
from core.storage.db import Database

if TYPE_CHECKING:
    from core.maintenance.calendar import MaintenanceCalendar

CACHE_SEC = 60.0
CACHE_ENTRIES = 4096  # labels come from the query string: the cache is bounded
# Uptime periods: how far back, and the rollup level read: the monitor stats' windows.
PERIODS = {name.removeprefix("last_"): (length, level) for name, length, level in WINDOWS}
# Shields' named colours: brightgreen, red, blue, lightgrey.
STATUS_COLORS = {
    "up": "#4c1",
    "down": "#e05d44",
    "maintenance": "#007ec6",
    "paused": "#9f9f9f",
    "pending": "#9f9f9f",
}
NO_DATA_COLOR = "#9f9f9f"
# (at least this uptime %, colour): brightgreen, green, yellowgreen, yellow, orange, red.
UPTIME_COLORS = ((99.9, "#4c1"), (99.0, "#97ca00"), (97.0, "#a4a61d"), (95.0, "#dfb317"), (90.0, "#fe7d37"))
UPTIME_FLOOR_COLOR = "#e05d44"

CacheKey = tuple[int, str, str, str | None, str]


def format_uptime(up_checks: int, checks: int) -> str:
    """ "99.95%": the share in percent, cut (never rounded up) to two
    decimals, trailing zeros dropped; "100%" only when every check was up."""
    hundredths = up_checks * 10_000 // checks
    whole, frac = divmod(hundredths, 100)
    return f"{whole}.{frac:02d}".rstrip("0").rstrip(".") + "%"


def uptime_color(up_checks: int, checks: int) -> str:
    pct = 100.0 * up_checks / checks
    return next((color for floor, color in UPTIME_COLORS if pct >= floor), UPTIME_FLOOR_COLOR)


async def _public_monitor(conn: AsyncConnection, monitor_id: int) -> Any | None:
    """The monitor's row (id, org_id, paused, status) if it may have a badge, else None."""
    m, s = t.monitors, t.monitor_state
    row = (
        await conn.execute(
            select(m.c.id, m.c.org_id, m.c.paused, m.c.settings, s.c.status)
            .outerjoin(s, s.c.monitor_id == m.c.id)
            .where(m.c.id == monitor_id)
        )
    ).first()
    if row is None:
        return None
    if json.loads(row.settings).get("publicBadge"):
        return row
    shown = await conn.execute(
        select(spm.c.page_id)
        .join(sp, sp.c.id == spm.c.page_id)
        .where(spm.c.monitor_id == monitor_id, sp.c.published.is_(True), sp.c.password_hash.is_(None))
        .limit(1)
    )
    return row if shown.first() is not None else None


async def _uptime(conn: AsyncConnection, monitor_id: int, period: str, now: datetime) -> tuple[int, int]:
    """(up checks, checks) over the period."""
    length, level = PERIODS[period]
    ro = t.check_rollups
    row = (
        await conn.execute(
            select(func.coalesce(func.sum(ro.c.up_checks), 0), func.coalesce(func.sum(ro.c.checks), 0)).where(
                ro.c.monitor_id == monitor_id,
                ro.c.level == level,
                ro.c.bucket_start >= bucket_start(now - length, level),
            )
        )
    ).one()
    return int(row[0]), int(row[1])


class Badges:
    def __init__(self, db: Database, *, calendar: MaintenanceCalendar | None = None) -> None:
        self.db = db
        self.calendar = calendar
        self._cache: OrderedDict[CacheKey, tuple[float, bytes]] = OrderedDict()

    async def render(self, monitor_id: int, *, metric: str, period: str, label: str | None, style: str) -> bytes | None:
        """The badge's SVG, or None when the monitor has no public badge (or
        the metric, period or style is none of those known)."""
        if metric not in ("status", "uptime") or period not in PERIODS or style not in STYLES:
            return None
        key: CacheKey = (monitor_id, metric, period, label, style)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self.db.read() as conn:
            row = await _public_monitor(conn, monitor_id)
            if row is None:
                return None
            counts = await _uptime(conn, monitor_id, period, clock.precise_now()) if metric == "uptime" else None
        if counts is None:
            default_label, message = "status", self._status(row)
            color = STATUS_COLORS[message]
        else:
            up, checks = counts
            default_label = f"uptime {period}"
            message = format_uptime(up, checks) if checks else "no data"
            color = uptime_color(up, checks) if checks else NO_DATA_COLOR
        svg = render_badge(default_label if label is None else label, message, color, style=style)
        self._remember(key, svg, now)
        return svg

    def _status(self, row: Any) -> str:
        status = shown_status(row.paused, row.status, row.org_id, row.id, self.calendar)
        return status if status in STATUS_COLORS else "pending"

    def _remember(self, key: CacheKey, svg: bytes, now: float) -> None:
        self._cache[key] = (now + CACHE_SEC, svg)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
