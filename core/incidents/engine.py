"""The incident engine: monitor status changes become incidents and alerts.

It reads ``monitor_events`` in id order from where it last stopped (its row in
``event_cursors``), so a change committed by the scheduler is never lost: a
process killed after the commit handles it when it comes back. For each event,
in one transaction with the cursor's advance:

- into ``down``: one incident per monitor. An open one (automatic or manual)
  takes the event; an automatic one resolved within OBSERVE_INCIDENT_REOPEN_SEC
  reopens (``incident.reopened``); else a new incident opens
  (``incident.opened``). Inside a maintenance window nothing opens and nothing
  is sent: the monitor is noted in ``incident_suppressions`` instead, and if it
  is still down when no window covers it any more, its incident opens then.
- into ``up`` (from ``down``): the open automatic incident resolves
  (``incident.resolved``); a suppression is dropped.

Each tick also sends the repeats that are due (``alertRepeatIntervalMin``,
while open, unacknowledged and not in maintenance). Alerts are outbox rows in
the same transaction; the dispatcher sends them after the commit. Opening,
reopening and resolving also mail the subscribers of the status pages that
show the monitor (repeats do not).

With several processes the cursor row is locked for the tick (PostgreSQL
``FOR UPDATE``; SQLite has one writer anyway), so each event is handled once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.alerts import outbox
from core.alerts.messages import describe_cause, format_duration
from core.config import Settings
from core.incidents import store
from core.incidents.tables import event_cursors, incident_suppressions, incidents
from core.maintenance.calendar import MaintenanceCalendar
from core.monitors.store import MonitorStore
from core.scheduler.events import StatusChange
from core.status_pages.subscriptions import queue_incident_notice
from core.storage import faults
from core.storage import tables as t
from core.storage.db import Database

log = logging.getLogger("observe.incidents")

CURSOR = "incidents"
_BATCH = 500
_POLL_SEC = 1.0  # other processes' events, due repeats, windows ending


class IncidentEngine:
    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        calendar: MaintenanceCalendar,
        monitor_store: MonitorStore,
        notify: Callable[[], None],
    ) -> None:
        self.db = db
        self.settings = settings
        self.calendar = calendar
        self.monitor_store = monitor_store
        self.notify = notify  # outbox rows committed: wakes the dispatcher
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seen_event_id = -1  # the newest event id a tick has handled here

    # ---- lifecycle ---------------------------------------------------------

    async def on_changes(self, changes: list[StatusChange]) -> None:
        """A StatusHooks subscriber: the scheduler committed these changes."""
        self._wake.set()

    async def start(self) -> None:
        await self._ensure_cursor()
        self._task = asyncio.create_task(self._loop(), name="incident-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _ensure_cursor(self) -> None:
        """The first start begins after the newest event: history from before
        the engine existed opens no incidents."""
        async with self.db.write() as conn:
            newest = (await conn.execute(select(func.max(t.monitor_events.c.id)))).scalar_one() or 0
            stmt = self.db.upsert(event_cursors).values(name=CURSOR, last_event_id=newest, updated_at=clock.now())
            await conn.execute(stmt.on_conflict_do_nothing(index_elements=[event_cursors.c.name]))

    async def _loop(self) -> None:
        while True:
            try:
                more = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away for a while; try again
                faults.log_round_failure(log, "incident engine tick failed", exc)
                more = False
                await asyncio.sleep(_POLL_SEC)
            if more:
                continue
            timeout = _POLL_SEC
            change = self.calendar.next_change()
            if change is not None:
                timeout = min(timeout, max(0.0, (change - clock.precise_now()).total_seconds()) + 0.05)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    # ---- one tick ----------------------------------------------------------

    async def tick(self) -> bool:
        """Handles new events, windows that ended and due repeats; True when
        more events are waiting."""
        now = clock.now()
        if not await self._work_waiting(now):
            return False
        sent = 0
        async with self.db.write() as conn:
            cursor_query = select(event_cursors.c.last_event_id).where(event_cursors.c.name == CURSOR)
            if not self.db.is_sqlite:
                cursor_query = cursor_query.with_for_update()
            last = (await conn.execute(cursor_query)).scalar_one()
            events = (
                await conn.execute(
                    select(t.monitor_events)
                    .where(t.monitor_events.c.id > last)
                    .order_by(t.monitor_events.c.id)
                    .limit(_BATCH)
                )
            ).all()
            for event in events:
                sent += await self._apply(conn, event, now)
            if events:
                last = events[-1].id
                await conn.execute(
                    update(event_cursors)
                    .where(event_cursors.c.name == CURSOR)
                    .values(last_event_id=last, updated_at=now)
                )
            sent += await self._windows_ended(conn, now)
            sent += await self._repeats(conn, now)
        self._seen_event_id = last
        if sent:
            self.notify()
        return len(events) == _BATCH

    async def _work_waiting(self, now: datetime) -> bool:
        """A cheap read first, so an idle engine takes no write lock."""
        async with self.db.read() as conn:
            newest = (await conn.execute(select(func.max(t.monitor_events.c.id)))).scalar_one() or 0
            if newest > self._seen_event_id:
                return True
            if (await conn.execute(select(incident_suppressions.c.monitor_id).limit(1))).first() is not None:
                return True
            due = select(incidents.c.id).where(incidents.c.next_repeat_at <= now).limit(1)
            return (await conn.execute(due)).first() is not None

    async def _apply(self, conn: AsyncConnection, event: Any, now: datetime) -> int:
        if event.to_status == "down":
            return await self._down(conn, event, now)
        if event.to_status == "up" and event.from_status == "down":
            return await self._up(conn, event, now)
        return 0

    async def _down(self, conn: AsyncConnection, event: Any, now: datetime) -> int:
        # The monitor row is locked first, as a manual CreateIncident does, so
        # the two cannot both find no open incident and open one each.
        monitor = await self._monitor(conn, event.monitor_id, lock=not self.db.is_sqlite)
        if monitor is None or await store.open_incident_of(conn, event.monitor_id) is not None:
            return 0
        cause = await self._cause(conn, event)
        if await self.calendar.covers(conn, event.org_id, event.monitor_id, event.at):
            stmt = self.db.upsert(incident_suppressions).values(
                monitor_id=event.monitor_id, org_id=event.org_id, since=event.at, cause=json.dumps(cause)
            )
            await conn.execute(stmt.on_conflict_do_nothing(index_elements=[incident_suppressions.c.monitor_id]))
            return 0
        return await self._open(conn, monitor, cause, started_at=event.at, now=now)

    async def _open(
        self, conn: AsyncConnection, monitor: Any, cause: dict[str, Any], *, started_at: datetime, now: datetime
    ) -> int:
        name, repeat = monitor.name, _repeat_min(monitor)
        what = describe_cause(cause) or "failing checks"
        since = now - timedelta(seconds=self.settings.incident_reopen_sec)
        recent = await store.recently_auto_resolved(conn, monitor.id, since)
        if recent is not None:
            await store.reopen(
                conn, recent.id, message=f"{name} is down again: {what}. Reopened.", now=now, repeat_min=repeat
            )
            return await self._alert(conn, monitor, recent.id, "incident.reopened", now, public=True)
        incident_id = await store.open_incident(
            conn,
            org_id=monitor.org_id,
            monitor_id=monitor.id,
            title=f"{name} is down",
            cause=cause,
            started_at=started_at,
            automatic=True,
            message=f"{name} is down: {what}.",
            author_user_id=None,
            now=now,
            repeat_min=repeat,
        )
        return await self._alert(conn, monitor, incident_id, "incident.opened", now, public=True)

    async def _up(self, conn: AsyncConnection, event: Any, now: datetime) -> int:
        await conn.execute(delete(incident_suppressions).where(incident_suppressions.c.monitor_id == event.monitor_id))
        row = await store.open_incident_of(conn, event.monitor_id)
        if row is None or not row.automatic:
            return 0
        monitor = await self._monitor(conn, event.monitor_id)
        if monitor is None:
            return 0
        down_for = format_duration(int((event.at - row.started_at).total_seconds()))
        await store.resolve(
            conn, row.id, message=f"{monitor.name} is up again after {down_for}.", author_user_id=None, now=now,
            automatic=True,
        )  # fmt: skip
        return await self._alert(conn, monitor, row.id, "incident.resolved", now, public=True)

    async def _windows_ended(self, conn: AsyncConnection, now: datetime) -> int:
        """Monitors that went down in a window no window covers any more: still
        down opens the incident now; recovered ones were dropped on ``up``."""
        sent = 0
        rows = (await conn.execute(select(incident_suppressions))).all()
        for row in rows:
            if self.calendar.covered_now(row.org_id, row.monitor_id):
                continue
            await conn.execute(
                delete(incident_suppressions).where(incident_suppressions.c.monitor_id == row.monitor_id)
            )
            status = (
                await conn.execute(
                    select(t.monitor_state.c.status).where(t.monitor_state.c.monitor_id == row.monitor_id)
                )
            ).scalar_one_or_none()
            if status != "down":
                continue
            monitor = await self._monitor(conn, row.monitor_id, lock=not self.db.is_sqlite)
            if monitor is not None and await store.open_incident_of(conn, row.monitor_id) is None:
                cause = json.loads(row.cause) if row.cause else {"reason": "unknown", "regions": ["local"]}
                sent += await self._open(conn, monitor, cause, started_at=now, now=now)
        return sent

    async def _repeats(self, conn: AsyncConnection, now: datetime) -> int:
        """The down alert again for open, unacknowledged incidents whose repeat
        is due; in maintenance the repeat waits for the next interval."""
        sent = 0
        due = (
            await conn.execute(
                select(incidents.c.id, incidents.c.org_id, incidents.c.monitor_id)
                .where(
                    incidents.c.next_repeat_at <= now,
                    incidents.c.resolved_at.is_(None),
                    incidents.c.acknowledged_at.is_(None),
                )
                .order_by(incidents.c.next_repeat_at)
                .limit(_BATCH)
            )
        ).all()
        for row in due:
            monitor = await self._monitor(conn, row.monitor_id) if row.monitor_id is not None else None
            repeat = _repeat_min(monitor) if monitor is not None else 0
            next_at = now + timedelta(minutes=repeat) if repeat else None
            await conn.execute(update(incidents).where(incidents.c.id == row.id).values(next_repeat_at=next_at))
            if monitor is not None and repeat and not self.calendar.covered_now(row.org_id, monitor.id):
                sent += await self._alert(conn, monitor, row.id, "incident.opened", now)
        # Acknowledged or resolved ones keep no repeat.
        await conn.execute(
            update(incidents)
            .where(
                incidents.c.next_repeat_at <= now,
                (incidents.c.resolved_at.is_not(None)) | (incidents.c.acknowledged_at.is_not(None)),
            )
            .values(next_repeat_at=None)
        )
        return sent

    # ---- helpers -----------------------------------------------------------

    async def _alert(
        self, conn: AsyncConnection, monitor: Any, incident_id: int, event: str, now: datetime, *, public: bool = False
    ) -> int:
        """Queues ``event`` for the monitor's channels and, when ``public``, the status pages' subscribers."""
        payload = await store.alert_payload(conn, incident_id, self.monitor_store)
        told = await queue_incident_notice(conn, incident_id, event, now) if public else 0
        return told + await outbox.enqueue(
            conn,
            org_id=monitor.org_id,
            monitor_id=monitor.id,
            incident_id=incident_id,
            event=event,
            payload=payload,
            now=now,
        )

    @staticmethod
    async def _monitor(conn: AsyncConnection, monitor_id: int, *, lock: bool = False) -> Any | None:
        query = select(t.monitors.c.id, t.monitors.c.org_id, t.monitors.c.name, t.monitors.c.settings).where(
            t.monitors.c.id == monitor_id
        )
        if lock:
            query = query.with_for_update()
        return (await conn.execute(query)).one_or_none()

    @staticmethod
    async def _cause(conn: AsyncConnection, event: Any) -> dict[str, Any]:
        """``{reason, statusCode, error, regions}`` from the check that made the monitor go down."""
        r = t.check_results.c
        check = (
            await conn.execute(
                select(r.status_code, r.region)
                .where(r.monitor_id == event.monitor_id, r.checked_at <= event.at)
                .order_by(r.id.desc())
                .limit(1)
            )
        ).one_or_none()
        return {
            "reason": event.reason or "unknown",
            "statusCode": check.status_code if check is not None else None,
            "error": event.error,
            "regions": [check.region if check is not None else "local"],
        }


def _repeat_min(monitor: Any) -> int:
    return int(json.loads(monitor.settings).get("alertRepeatIntervalMin") or 0)
