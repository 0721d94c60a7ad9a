"""Which monitors maintenance windows cover: now (for projections, the
scheduler's rollups and the incident engine) and at a given instant.

The calendar holds every window of every organisation, parsed once per
schedule (its times, rule and zone). ``refresh()`` reloads them and resolves tags into monitor
ids; between reloads, "now" answers come from memory: each window's phase
(active or not, and until when) is recomputed only once its next start or
end has passed, so ``covered_now`` costs a clock read and two set lookups.

A loop reloads every ``REFRESH_SEC`` (other processes' changes, tag edits)
and at the next boundary. A change made in this process reloads at once, on
the change's own connection (``refresh(conn)``): the call's transaction has
not committed yet, so a reload through another connection would not see it.
A periodic reload that began around then may have read the old rows; it is
dropped, and the loop reloads again once the change has surely committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from core.maintenance.schedule import Schedule, State, Status
from core.maintenance.store import schedule_of
from core.maintenance.tables import maintenance_windows as mw
from core.storage import faults
from core.storage import tables as t
from core.storage.db import Database

log = logging.getLogger(__name__)

REFRESH_SEC = 2.0
# How long after a change in this process a periodic reload may still have
# read the rows as they were before it (the change commits when its call ends).
SETTLE_SEC = 1.0
_COLUMNS = (mw.c.id, mw.c.org_id, mw.c.starts_at, mw.c.ends_at, mw.c.rrule, mw.c.timezone,
            mw.c.monitor_ids, mw.c.tags, mw.c.all_monitors)  # fmt: skip
# A window's schedule as a key: two edits within a second share updated_at.
Key = tuple[int, datetime, datetime, str | None, str]


def _key(row: Any) -> Key:
    return (row.id, row.starts_at, row.ends_at, row.rrule, row.timezone)


@dataclass(frozen=True, slots=True)
class _Window:
    id: int
    key: Key  # a change of schedule makes a new key
    org_id: int
    schedule: Schedule
    monitor_ids: frozenset[int]  # by id, plus (after a refresh) those its tags matched
    tags: frozenset[str]
    all_monitors: bool


@dataclass(frozen=True, slots=True)
class _Phase:
    """A window between two of its boundaries: its state, and until when it
    holds (None: for good)."""

    state: State
    until: datetime | None

    @property
    def active(self) -> bool:
        return self.state.status is Status.ACTIVE

    def holds(self, now: datetime) -> bool:
        return self.until is None or now < self.until


def _phase(schedule: Schedule, now: datetime) -> _Phase:
    current, upcoming = schedule.current(now), schedule.upcoming(now)
    bounds = [b for b in (current.ends_at if current else None, upcoming.starts_at if upcoming else None) if b]
    if current is not None:
        state = State(Status.ACTIVE, current)
    else:
        state = State(Status.SCHEDULED if upcoming else Status.COMPLETED, upcoming)
    return _Phase(state, min(bounds) if bounds else None)


class MaintenanceCalendar:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._windows: dict[int, _Window] = {}
        self._by_org: dict[int, list[_Window]] = {}
        self._parsed: dict[Key, Schedule] = {}
        self._phases: dict[Key, _Phase] = {}
        self._active: frozenset[tuple[int, int]] = frozenset()
        self._active_orgs: frozenset[int] = frozenset()  # orgs with an active allMonitors window
        self._until: datetime | None = None  # the next boundary of any window
        self._pinned_at = -math.inf  # monotonic time of the last refresh on a change's connection
        self._task: asyncio.Task[None] | None = None

    # ---- loading ---------------------------------------------------------------

    async def refresh(self, conn: AsyncConnection | None = None) -> None:
        """Reloads the windows: on ``conn`` after a change in this process (it
        sees the change before it commits), else on a connection of its own."""
        if conn is not None:
            self._apply(*await self._load(conn))
            self._pinned_at = time.monotonic()
            return
        began = time.monotonic()
        async with self.db.read() as own:
            loaded = await self._load(own)
        if began < self._pinned_at + SETTLE_SEC:
            return  # may predate a change still committing; the loop comes back after SETTLE_SEC
        self._apply(*loaded)

    async def _load(self, conn: AsyncConnection) -> tuple[list[_Window], dict[Key, _Phase]]:
        rows = (await conn.execute(select(*_COLUMNS))).all()
        now = datetime.now(UTC)
        windows: list[_Window] = []
        phases: dict[Key, _Phase] = {}
        for row in rows:
            key = _key(row)
            schedule = self._parsed.get(key) or schedule_of(row)
            phase = self._phases.get(key)
            phases[key] = phase if phase is not None and phase.holds(now) else _phase(schedule, now)
            windows.append(
                _Window(
                    row.id,
                    key,
                    row.org_id,
                    schedule,
                    frozenset(json.loads(row.monitor_ids)),
                    frozenset(json.loads(row.tags)),
                    bool(row.all_monitors),
                )
            )
        return await self._resolve_tags(conn, windows, phases), phases

    async def _resolve_tags(
        self, conn: AsyncConnection, windows: list[_Window], phases: dict[Key, _Phase]
    ) -> list[_Window]:
        """Adds to each window not yet over the monitors its tags match now."""
        live = {w.id for w in windows if w.tags and (phases[w.key].active or phases[w.key].until is not None)}
        if not live:
            return windows
        tags = {tag for w in windows if w.id in live for tag in w.tags}
        orgs = {w.org_id for w in windows if w.id in live}
        c = t.monitor_tags.c
        found: dict[tuple[int, str], set[int]] = {}
        for org_id, tag, monitor_id in await conn.execute(
            select(c.org_id, c.tag, c.monitor_id).where(c.tag.in_(tags), c.org_id.in_(orgs))
        ):
            found.setdefault((org_id, tag), set()).add(monitor_id)
        out = []
        for w in windows:
            if w.id in live:
                matched = {m for tag in w.tags for m in found.get((w.org_id, tag), ())}
                w = _Window(w.id, w.key, w.org_id, w.schedule, w.monitor_ids | matched, w.tags, w.all_monitors)
            out.append(w)
        return out

    def _apply(self, windows: list[_Window], phases: dict[Key, _Phase]) -> None:
        self._parsed = {w.key: w.schedule for w in windows}
        self._phases = phases
        self._windows = {w.id: w for w in windows}
        by_org: dict[int, list[_Window]] = {}
        for w in windows:
            by_org.setdefault(w.org_id, []).append(w)
        self._by_org = by_org
        self._recompute(datetime.now(UTC))

    def _recompute(self, now: datetime) -> None:
        """The active sets at ``now``, from each window's phase (recomputed when past)."""
        active: set[tuple[int, int]] = set()
        orgs: set[int] = set()
        until: datetime | None = None
        for w in self._windows.values():
            phase = self._phases[w.key]
            if not phase.holds(now):
                phase = self._phases[w.key] = _phase(w.schedule, now)
            if phase.active:
                if w.all_monitors:
                    orgs.add(w.org_id)
                active.update((w.org_id, m) for m in w.monitor_ids)
            if phase.until is not None and (until is None or phase.until < until):
                until = phase.until
        self._active, self._active_orgs, self._until = frozenset(active), frozenset(orgs), until

    def _current(self) -> None:
        if self._until is not None and datetime.now(UTC) >= self._until:
            self._recompute(datetime.now(UTC))

    # ---- questions -------------------------------------------------------------

    def covered_now(self, org_id: int, monitor_id: int) -> bool:
        """Whether an active window covers the monitor now (windows and tags as
        of the last refresh; starts and ends exact). Cheap: no I/O."""
        self._current()
        return org_id in self._active_orgs or (org_id, monitor_id) in self._active

    async def covers(self, conn: AsyncConnection, org_id: int, monitor_id: int, at: datetime) -> bool:
        """Whether a window of the org covers the monitor at ``at`` (reads the monitor's tags on ``conn``)."""
        windows = [w for w in self._by_org.get(org_id, ()) if w.schedule.covers(at)]
        if any(w.all_monitors or monitor_id in w.monitor_ids for w in windows):
            return True
        tags = {tag for w in windows for tag in w.tags}
        if not tags:
            return False
        c = t.monitor_tags.c
        found = await conn.execute(select(c.tag).where(c.monitor_id == monitor_id, c.tag.in_(tags)).limit(1))
        return found.first() is not None

    def state(self, row: Any, now: datetime) -> State:
        """A window's state at ``now`` (a row of maintenance_windows): from the
        phase kept since its last boundary when the calendar knows this
        version of it, else computed (expanding a rule costs time)."""
        key = _key(row)
        phase = self._phases.get(key)
        if phase is not None and phase.holds(now):
            return phase.state
        return _phase(self._parsed.get(key) or schedule_of(row), now).state

    def next_change(self) -> datetime | None:
        """The next instant at which some window starts or ends; None when none is left."""
        self._current()
        return self._until

    # ---- the loop ----------------------------------------------------------------

    async def start(self) -> None:
        """Loads the windows and starts the refresh loop."""
        await self.refresh()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="maintenance-calendar")

    async def stop(self) -> None:
        """Stops the refresh loop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._delay())
            try:
                await self.refresh()
            except Exception as exc:  # the database away for a moment: keep what we have, try again
                faults.log_round_failure(log, "maintenance calendar refresh failed", exc)

    def _delay(self) -> float:
        delay = REFRESH_SEC
        upcoming = self.next_change()
        if upcoming is not None:
            delay = min(delay, (upcoming - datetime.now(UTC)).total_seconds())
        settled = self._pinned_at + SETTLE_SEC - time.monotonic()
        if settled > 0:
            delay = min(delay, settled + 0.05)
        return max(delay, 0.01)
