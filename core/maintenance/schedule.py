"""When a maintenance window is on: its occurrences, computed from startsAt/endsAt and an RRULE.

`parse_schedule(starts_at=..., ends_at=..., rrule=..., timezone=...)` validates the input and
returns a `Schedule`; a bad field raises `ScheduleError` (a `ValueError` naming the field).
A `Schedule` answers, for an instant, the window's status and next occurrence, whether the
instant is inside an occurrence, and which occurrences overlap a time range.

Rules (RFC 5545 unless noted):
- startsAt/endsAt are the first occurrence (DTSTART is always an occurrence and counts toward
  COUNT, even when it does not match the rule); every other occurrence lasts as long as the
  first, in elapsed time. Occurrences are half-open: [start, end).
- The rule expands in `timezone` on the local wall clock, so a weekly 02:00 window in
  Europe/Berlin starts at 02:00 local in summer and in winter.
- A local start that does not exist (spring-forward gap) is read with the offset before the
  gap: 02:30 becomes 03:30 summer time. A local start that exists twice (fall-back hour) is
  the first of the two (summer time). These are RFC 5545 section 3.3.5's rules, and what
  `zoneinfo` does with `fold=0`. (So an HOURLY rule yields the same UTC start twice on
  spring-forward day, 02:30 and 03:30 both being 01:30 UTC; the duplicate is merged.)
- UNTIL must be a UTC time ("…Z"), as RFC 5545 requires when DTSTART has a time zone.
- Our limits: FREQ is HOURLY or slower, and the rule must produce an occurrence within ten
  years of startsAt. dateutil scans forward from DTSTART to answer `after`/`between`, and a
  rule that never matches (FEBRUARY 30th) would scan to the year 9999; the probe below finds
  that once, on a range bounded by UNTIL, at parse time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule as recurrence

MAX_DURATION = timedelta(days=31)
PROBE_HORIZON = timedelta(days=3653)
MAX_RRULE_LENGTH = 1000
_TOO_FREQUENT = frozenset({"SECONDLY", "MINUTELY"})


class ScheduleError(ValueError):
    """A schedule input is invalid; `field` is the request field to blame (e.g. "rrule")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Status(enum.StrEnum):
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class Occurrence:
    starts_at: datetime  # UTC
    ends_at: datetime  # UTC, exclusive

    def contains(self, instant: datetime) -> bool:
        return self.starts_at <= instant < self.ends_at


@dataclass(frozen=True, slots=True)
class State:
    """What a window's projection shows at one instant; `next` is None once completed."""

    status: Status
    next: Occurrence | None


@dataclass(frozen=True, slots=True)
class Schedule:
    first: Occurrence
    timezone: ZoneInfo
    # The recurrence without DTSTART's own occurrence (COUNT already reduced when DTSTART
    # does not match); None for a one-off window or a rule that adds nothing.
    rule: recurrence.rrule | None

    @property
    def duration(self) -> timedelta:
        return self.first.ends_at - self.first.starts_at

    def _occurrence(self, start: datetime) -> Occurrence:
        start = start.astimezone(UTC)
        return Occurrence(start, start + self.duration)

    def _starts_between(self, low: datetime, high: datetime) -> list[datetime]:
        """Occurrence starts s with low <= s <= high, in UTC, sorted."""
        starts = {self.first.starts_at} if low <= self.first.starts_at <= high else set()
        if self.rule is not None:
            # dateutil compares its zone-local datetimes with these UTC ones by UTC offset.
            starts.update(s.astimezone(UTC) for s in self.rule.between(low, high, inc=True))
        # Nothing precedes DTSTART (a rule start on its wall time but the other fold would).
        return sorted(s for s in starts if low <= s <= high and s >= self.first.starts_at)

    def overlapping(self, start: datetime, end: datetime) -> list[Occurrence]:
        """Occurrences that share some time with [start, end), earliest first."""
        _require_aware(start, end)
        if end <= start:
            return []
        candidates = self._starts_between(start - self.duration, end)
        return [o for o in map(self._occurrence, candidates) if o.starts_at < end and o.ends_at > start]

    def current(self, instant: datetime) -> Occurrence | None:
        """The occurrence that contains `instant` (the earliest-started one if several overlap)."""
        _require_aware(instant)
        for occurrence in map(self._occurrence, self._starts_between(instant - self.duration, instant)):
            if occurrence.contains(instant):
                return occurrence
        return None

    def covers(self, instant: datetime) -> bool:
        """Whether `instant` falls inside any occurrence."""
        return self.current(instant) is not None

    def upcoming(self, instant: datetime) -> Occurrence | None:
        """The first occurrence starting strictly after `instant`, or None."""
        _require_aware(instant)
        if self.first.starts_at > instant:
            return self.first
        after = self.rule.after(instant) if self.rule is not None else None
        return self._occurrence(after) if after is not None else None

    def state(self, now: datetime) -> State:
        current = self.current(now)
        if current is not None:
            return State(Status.ACTIVE, current)
        upcoming = self.upcoming(now)
        return State(Status.SCHEDULED if upcoming else Status.COMPLETED, upcoming)


def parse_schedule(
    *, starts_at: datetime, ends_at: datetime, rrule: str | None = None, timezone: str = "UTC"
) -> Schedule:
    """Validate a window's schedule fields; raises ScheduleError naming the bad field."""
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise ScheduleError("startsAt", "must carry a UTC offset")
    if ends_at <= starts_at:
        raise ScheduleError("endsAt", "must be after startsAt")
    if ends_at - starts_at > MAX_DURATION:
        raise ScheduleError("endsAt", "must be at most 31 days after startsAt")
    zone = _zone(timezone)
    first = Occurrence(starts_at.astimezone(UTC), ends_at.astimezone(UTC))
    if rrule is None:
        return Schedule(first, zone, None)
    try:
        local_start = first.starts_at.astimezone(zone)
    except OverflowError as exc:
        raise ScheduleError("startsAt", "is out of range") from exc
    return Schedule(first, zone, _rule(rrule, local_start))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError("timezone", f"{name!r} is not an IANA time zone") from exc


def _rule(text: str, local_start: datetime) -> recurrence.rrule | None:
    parts = _parts(text)
    try:
        rule = recurrence.rrulestr(text.strip().removeprefix("RRULE:"), dtstart=local_start)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise ScheduleError("rrule", f"is not a valid RFC 5545 RRULE ({exc})") from exc
    if not isinstance(rule, recurrence.rrule):  # rrulestr builds an rruleset only for multi-line input
        raise ScheduleError("rrule", "must be a single RRULE")

    try:
        probe = rule.replace(count=None, until=local_start + PROBE_HORIZON)
        found = probe.after(local_start)
    except (ValueError, OverflowError) as exc:
        # dateutil checks some parts (INTERVAL=0) only while expanding.
        raise ScheduleError("rrule", f"cannot be expanded ({exc})") from exc
    if found is None:
        raise ScheduleError("rrule", "has no occurrence after startsAt within ten years")

    # RFC 5545: DTSTART is the first occurrence and counts toward COUNT even when the rule
    # would not produce it; dateutil only yields it when it matches, so one fewer is left.
    count = int(parts["COUNT"]) if "COUNT" in parts else None
    if count is not None and probe.after(local_start, inc=True) != local_start:
        return rule.replace(count=count - 1) if count > 1 else None
    return rule


def _parts(text: str) -> dict[str, str]:
    """The rule's NAME=VALUE parts, checked for what dateutil accepts but we do not."""
    if len(text) > MAX_RRULE_LENGTH:
        raise ScheduleError("rrule", f"must be at most {MAX_RRULE_LENGTH} characters")
    body = text.strip().removeprefix("RRULE:")
    if not body or any(c in body for c in "\r\n:"):
        raise ScheduleError("rrule", 'must be one RRULE value such as "FREQ=WEEKLY;BYDAY=SU"')
    parts: dict[str, str] = {}
    for part in body.split(";"):
        name, sep, value = part.partition("=")
        if not sep or not value:
            raise ScheduleError("rrule", f"{part!r} is not NAME=VALUE")
        if name.upper() in parts:
            raise ScheduleError("rrule", f"{name} appears twice")
        parts[name.upper()] = value.upper()
    if parts.get("FREQ") in _TOO_FREQUENT:
        raise ScheduleError("rrule", "FREQ must be HOURLY or slower")
    for name in ("COUNT", "INTERVAL"):
        if name in parts and not (parts[name].isdigit() and int(parts[name]) >= 1):
            raise ScheduleError("rrule", f"{name} must be a positive integer")
    if "UNTIL" in parts and not parts["UNTIL"].endswith("Z"):
        raise ScheduleError("rrule", 'UNTIL must be a UTC time such as "20270101T000000Z"')
    return parts


def _require_aware(*instants: datetime) -> None:
    if any(i.tzinfo is None for i in instants):
        raise ValueError("instants must carry a UTC offset")
