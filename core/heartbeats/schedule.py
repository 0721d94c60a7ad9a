"""When a heartbeat monitor is late, and what a ping does to it: pure
functions of the monitor's settings, its state and the time (no I/O), so the
ping writer and the lateness watcher agree and tests drive time themselves.

The rules are CONTRACT.md's (Heartbeats), after Healthchecks.io:

- a success is due ``intervalSec`` after the last one, or, with ``cron``, at
  the first tick of the schedule after it (in ``timezone``, cronsim as
  Healthchecks.io uses it); ``graceSec`` later the monitor is down;
- a start must end (success, fail or an exit status) within ``graceSec``;
- ``fail`` and a non-zero exit status turn it down at once; the next
  success turns it up;
- a new monitor is pending until its first ping and is never late before
  its first success (a start it does not end still counts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim

# Runs started and not ended that a monitor keeps (the oldest go first).
MAX_OPEN_STARTS = 50


@dataclass(frozen=True, slots=True)
class Schedule:
    """A heartbeat monitor's settings, as lateness needs them."""

    interval: timedelta
    grace: timedelta
    cron: str | None = None
    timezone: str = "UTC"
    paused: bool = False

    @classmethod
    def from_row(cls, settings: str | dict[str, Any], interval_sec: int, paused: bool, scale: float = 1.0) -> Schedule:
        """From the monitors row; ``scale`` is OBSERVE_CHECK_INTERVAL_SCALE
        (it shrinks interval and grace alike; a cron schedule is the clock's)."""
        m = json.loads(settings) if isinstance(settings, str) else settings
        return cls(
            interval=timedelta(seconds=interval_sec * scale),
            grace=timedelta(seconds=int(m.get("graceSec", 60)) * scale),
            cron=m.get("cron"),
            timezone=m.get("timezone") or "UTC",
            paused=bool(paused),
        )

    def expected_after(self, success_at: datetime) -> datetime:
        """When the success after one at ``success_at`` is due (before grace)."""
        if not self.cron:
            return success_at + self.interval
        local = success_at.astimezone(ZoneInfo(self.timezone))
        tick: datetime = next(CronSim(self.cron, local))
        return tick.astimezone(UTC)

    def late_at(self, success_at: datetime) -> datetime:
        """When a monitor whose last success was at ``success_at`` is down."""
        return self.expected_after(success_at) + self.grace


@dataclass(slots=True)
class State:
    """What is known of one heartbeat monitor (heartbeat_state, and its
    status from monitor_state)."""

    status: str = "pending"
    last_ping_at: datetime | None = None
    last_success_at: datetime | None = None
    counts_from: datetime | None = None  # the last success, or a resume after it
    open_starts: dict[str, datetime] = field(default_factory=dict)  # run id ("" for none) → start
    deadline_at: datetime | None = None
    deadline_reason: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> State:
        """From a row with monitor_state's ``status`` and heartbeat_state's
        columns (null when the monitor has no heartbeat_state row yet)."""
        starts = json.loads(row.open_starts) if row.open_starts else {}
        return cls(
            status=row.status or "pending",
            last_ping_at=row.last_ping_at,
            last_success_at=row.last_success_at,
            counts_from=row.counts_from,
            open_starts={rid: datetime.fromisoformat(at) for rid, at in starts.items()},
            deadline_at=row.deadline_at,
            deadline_reason=row.deadline_reason,
        )

    def values(self) -> tuple[Any, ...]:
        """heartbeat_state's columns after the keys: last_ping_at,
        last_success_at, counts_from, open_starts, deadline_at, deadline_reason."""
        starts = json.dumps({rid: at.isoformat() for rid, at in self.open_starts.items()}, separators=(",", ":"))
        return (
            self.last_ping_at,
            self.last_success_at,
            self.counts_from,
            starts,
            self.deadline_at,
            self.deadline_reason,
        )


@dataclass(frozen=True, slots=True)
class Change:
    """A status change a ping or the clock caused."""

    to_status: str
    reason: str | None
    error: str | None


def _fmt(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():g} s"


def apply_ping(
    state: State, schedule: Schedule, kind: str, exit_status: int | None, rid: str | None, at: datetime
) -> tuple[Change | None, int | None]:
    """Applies one ping to ``state`` (in place); returns the status change it
    causes (or None) and the run time in ms when it ends a start."""
    # Pings committed by another process may be older than what is stored:
    # times never go back.
    state.last_ping_at = _later(state.last_ping_at, at)
    runtime_ms: int | None = None
    if kind == "start":
        state.open_starts.pop(rid or "", None)  # a repeated start restarts the run
        state.open_starts[rid or ""] = at
        while len(state.open_starts) > MAX_OPEN_STARTS:
            state.open_starts.pop(min(state.open_starts, key=state.open_starts.__getitem__))
        change = None
    else:
        # The start it ends: the one with its run id; without one, the start
        # without one, else the latest start (a job may give rid to /start only).
        key = rid or ("" if "" in state.open_starts or not state.open_starts else latest(state.open_starts))
        started = state.open_starts.pop(key, None)
        if started is not None:
            runtime_ms = max(0, int((at - started).total_seconds() * 1000))
        failed = kind == "fail" or (kind == "exit" and exit_status != 0)
        if failed:
            state.open_starts.clear()  # the run is over, and so are the others: the job is down
            error = "the job reported a failure" if kind == "fail" else f"the job exited with status {exit_status}"
            reason = "fail" if kind == "fail" else "exit_status"
            change = Change("down", reason, error) if state.status != "down" else None
        else:
            state.last_success_at = _later(state.last_success_at, at)
            state.counts_from = _later(state.counts_from, at)
            change = Change("up", None, None) if state.status != "up" else None
    if schedule.paused:
        change = None  # recorded, but a paused monitor's status does not move
    if change is not None:
        state.status = change.to_status
    set_deadline(state, schedule, at)
    return change, runtime_ms


def _later(current: datetime | None, at: datetime) -> datetime:
    return at if current is None or at > current else current


def latest(starts: dict[str, datetime]) -> str:
    return max(starts, key=starts.__getitem__)


def set_deadline(state: State, schedule: Schedule, now: datetime) -> None:
    """When the monitor goes down if nothing arrives first: the earlier of
    its schedule's (counted from its last success, or a resume after it) and
    its oldest open start's; none while down, or pending without a start.

    While paused there is none either, and ``deadline_reason`` says
    "paused": whoever looks first after the resume (a ping, the watcher)
    starts the clock again at ``now`` (:func:`resume`)."""
    if schedule.paused:
        state.deadline_at, state.deadline_reason = None, "paused"
        return
    if state.deadline_reason == "paused":
        resume(state, now)
    state.deadline_at, state.deadline_reason = None, None
    if state.status == "down":
        return
    if state.counts_from is not None:
        state.deadline_at, state.deadline_reason = schedule.late_at(state.counts_from), "late"
    if state.open_starts:
        start_due = min(state.open_starts.values()) + schedule.grace
        if state.deadline_at is None or start_due < state.deadline_at:
            state.deadline_at, state.deadline_reason = start_due, "start"


def resume(state: State, now: datetime) -> None:
    """The monitor was paused until ``now``: its clock starts again, so the
    next success is due one period after the resume, and a run started
    before has its grace from the resume too."""
    if state.counts_from is not None:
        state.counts_from = max(state.counts_from, now)
    state.open_starts = {rid: max(at, now) for rid, at in state.open_starts.items()}


def expire(state: State, schedule: Schedule, now: datetime) -> Change | None:
    """The clock's part: the monitor is down when its deadline (recomputed
    from the current settings) has passed. Updates ``state`` in place."""
    set_deadline(state, schedule, now)
    if state.deadline_at is None or state.deadline_at > now:
        return None
    if state.deadline_reason == "start":
        started = min(state.open_starts.values())
        error = f"started at {_fmt(started)} and not ended within the {_seconds(schedule.grace)} grace"
        reason = "start_timeout"
    else:
        assert state.counts_from is not None
        due = schedule.expected_after(state.counts_from)
        since = f"since {_fmt(state.last_success_at)}" if state.last_success_at is not None else "yet"
        error = f"no success ping {since}: due at {_fmt(due)}, {_seconds(schedule.grace)} grace"
        reason = "late"
    state.status = "down"
    state.open_starts.clear()
    set_deadline(state, schedule, now)
    return Change("down", reason, error)
