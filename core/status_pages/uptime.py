"""A component's history as a status page shows it: per UTC day, the uptime,
the seconds down and the seconds in maintenance.

Pure functions over time intervals (half-open ``[start, end)``, aware UTC
datetimes); the reads are :mod:`core.status_pages.view`'s.

- Checked monitors: a day's uptime is its daily rollup's ``up_checks /
  checks`` (results inside maintenance never reach the rollups).
- Heartbeat monitors have no rollups: their uptime is time-based, the share
  of the day's known time (from their first status on, up to now, less
  maintenance) that was not down.
- Down time comes from status events: from each change into ``down`` to the
  next change, less the time in maintenance (shown as maintenance instead).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

Interval = tuple[datetime, datetime]
DAY = timedelta(days=1)


def merged(intervals: Iterable[Interval]) -> list[Interval]:
    """The union of ``intervals`` as sorted, disjoint intervals (empty ones dropped)."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[0] < i[1]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def minus(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """``a`` without ``b`` (both merged)."""
    out: list[Interval] = []
    j = 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k, cursor = j, start
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cursor:
                out.append((cursor, b[k][0]))
            cursor = max(cursor, b[k][1])
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


def seconds_within(intervals: Sequence[Interval], start: datetime, end: datetime) -> float:
    """Seconds of (merged) ``intervals`` inside ``[start, end)``."""
    total = 0.0
    for s, e in intervals:
        if e <= start:
            continue
        if s >= end:
            break
        total += (min(e, end) - max(s, start)).total_seconds()
    return total


@dataclass(frozen=True, slots=True)
class Event:
    """A status change of one monitor."""

    at: datetime
    to_status: str


def down_intervals(events: Sequence[Event], open_until: datetime) -> list[Interval]:
    """When the monitor was down: each change into ``down`` until the next
    change; a last ``down`` lasts until ``open_until``. ``events`` in order."""
    out: list[Interval] = []
    for i, event in enumerate(events):
        if event.to_status != "down":
            continue
        end = events[i + 1].at if i + 1 < len(events) else open_until
        out.append((event.at, end))
    return merged(out)


def day_starts(today: datetime, days: int) -> list[datetime]:
    """``days`` UTC midnights, oldest first, the last one ``today``'s."""
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    return [midnight - DAY * (days - 1 - i) for i in range(days)]


@dataclass(frozen=True, slots=True)
class DayFigures:
    date: str  # YYYY-MM-DD
    uptime_percent: float | None
    downtime_sec: int
    maintenance_sec: int


@dataclass(frozen=True, slots=True)
class History:
    days: list[DayFigures]
    uptime_percent: float | None  # over all the days


def _pct(up: float, total: float) -> float | None:
    return round(100.0 * up / total, 4) if total > 0 else None


def history(
    starts: Sequence[datetime],
    now: datetime,
    *,
    down: Sequence[Interval],
    maintenance: Sequence[Interval],
    rollups: dict[datetime, tuple[int, int]] | None,
    known_from: datetime | None,
) -> History:
    """The days of ``starts`` (UTC midnights) up to ``now``. ``rollups``:
    (checks, up_checks) by day for a checked monitor; None for a heartbeat
    monitor, whose uptime is the known time (from ``known_from`` on, None:
    never known) not down. ``down`` and ``maintenance`` merged."""
    shown_down = minus(down, maintenance)
    days: list[DayFigures] = []
    total_checks = total_up = 0
    total_known = total_down = 0.0
    for start in starts:
        end = min(start + DAY, now)
        down_sec = seconds_within(shown_down, start, end) if end > start else 0.0
        maint_sec = seconds_within(maintenance, start, end) if end > start else 0.0
        if rollups is not None:
            checks, up = rollups.get(start, (0, 0))
            total_checks += checks
            total_up += up
            pct = _pct(up, checks)
        else:
            if known_from is not None and end > max(start, known_from):
                lo = max(start, known_from)
                known = (end - lo).total_seconds() - seconds_within(maintenance, lo, end)
                down_known = seconds_within(shown_down, lo, end)
                total_known += known
                total_down += down_known
                pct = _pct(max(known - down_known, 0.0), known)
            else:
                pct = None
        days.append(DayFigures(start.date().isoformat(), pct, round(down_sec), round(maint_sec)))
    if rollups is not None:
        overall = _pct(total_up, total_checks)
    else:
        overall = _pct(max(total_known - total_down, 0.0), total_known)
    return History(days, overall)
