"""MaintenanceService: CRUD for maintenance windows.

The proto declares the field rules (and, on create, the cross-field ones);
a patch is re-checked here as the merged window. What needs a library or
the database stays here: the schedule (RRULE, time zone) and that the
monitors named are the organisation's. After each change the process's
calendar reloads on the call's own connection, so its monitors show (or
stop showing) ``maintenance`` at once; and the subscribers of the status
pages it covers are told in the same transaction (scheduled, changed,
cancelled: :func:`core.status_pages.subscriptions.queue_maintenance_notices`),
the alert dispatcher woken after the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from observe.v1 import maintenance_pb2, maintenance_pb2_grpc
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.errors import Violations, not_found
from core.maintenance import store
from core.maintenance.calendar import MaintenanceCalendar
from core.maintenance.schedule import ScheduleError, parse_schedule
from core.maintenance.tables import maintenance_windows as mw
from core.rpc import paging
from core.rpc.context import CallContext
from core.rpc.validator import ASCII_SPACES, VALIDATOR
from core.status_pages.subscriptions import WindowNotice, queue_maintenance_notices
from core.storage import tables as t
from core.storage.db import Database

CURSOR_KIND = "w"
# dateutil expands a rule from its first occurrence on every question, so a
# rule started long ago costs time on each read (an hourly one from ten years
# back: 0.4 s). A recurring window given a new start may start at most this
# long before now.
RECURRING_PAST_LIMIT = timedelta(days=366)
_SCHEDULE_FIELDS = ("startsAt", "endsAt", "rrule", "timezone")


class MaintenanceService(maintenance_pb2_grpc.MaintenanceServiceServicer):
    def __init__(
        self, *, db: Database, calendar: MaintenanceCalendar, notify: Callable[[], None] = lambda: None
    ) -> None:
        self.db = db
        self.calendar = calendar
        # After a commit that queued subscriber mail: wakes the alert dispatcher (else its next poll sends it).
        self.notify = notify

    # ---- helpers -------------------------------------------------------------

    async def _row(self, conn: AsyncConnection, org_id: int, window_id: int, *, lock: bool = False) -> Any:
        query = select(mw).where(mw.c.id == window_id, mw.c.org_id == org_id)
        if lock and not self.db.is_sqlite:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise not_found("maintenance window")
        return row

    def _check(self, m: dict[str, Any], given: dict[str, Any], v: Violations, *, patched: bool) -> None:
        """The merged window's rules: the proto's (for a patch; the pipeline
        checked a create whole), then the schedule's."""
        if isinstance(m.get("name"), str):  # the proto's pattern: more than ASCII spaces, which are trimmed
            m["name"] = m["name"].strip(ASCII_SPACES)
        if patched:
            v.items.extend(VALIDATOR.violations(store.as_input(m), patch=False))
        if v or not any(f in given for f in _SCHEDULE_FIELDS):
            return
        try:
            parse_schedule(starts_at=m["startsAt"], ends_at=m["endsAt"], rrule=m.get("rrule"), timezone=m["timezone"])
        except ScheduleError as exc:
            code = "invalid_string"
            if exc.field == "endsAt":
                code = "too_small" if m["endsAt"] <= m["startsAt"] else "too_big"
            message = exc.message if not exc.message[:1].islower() else f"{exc.field} {exc.message}"
            v.add(exc.field, code, message)
            return
        renewed = "startsAt" in given or "rrule" in given
        if m.get("rrule") and renewed and m["startsAt"] < clock.now() - RECURRING_PAST_LIMIT:
            v.add("startsAt", "too_small", "A recurring window starts at most 366 days before now")

    async def _check_monitors(self, conn: AsyncConnection, org_id: int, ids: list[int], v: Violations) -> None:
        if not ids:
            return
        found = set(
            (
                await conn.execute(
                    select(t.monitors.c.id).where(t.monitors.c.org_id == org_id, t.monitors.c.id.in_(ids))
                )
            ).scalars()
        )
        for i, monitor_id in enumerate(ids):
            if monitor_id not in found:
                v.add(f"monitorIds[{i}]", "custom", f"No monitor {monitor_id} in this organisation")

    async def _projection(self, conn: AsyncConnection, org_id: int, window_id: int) -> Any:
        row = await self._row(conn, org_id, window_id)
        return store.projection(row, self.calendar.state(row, clock.precise_now()))

    def _notice(self, row: Any) -> WindowNotice | None:
        """The window ``row`` as status-page subscribers hear of it; None once it has no occurrence left."""
        upcoming = self.calendar.state(row, clock.precise_now()).next
        if upcoming is None:
            return None
        return WindowNotice.of(store.settings(row), upcoming.starts_at, upcoming.ends_at)

    # ---- RPCs ------------------------------------------------------------------

    async def ListMaintenanceWindows(
        self, request: maintenance_pb2.ListMaintenanceWindowsRequest, ctx: CallContext
    ) -> maintenance_pb2.ListMaintenanceWindowsResponse:
        principal = ctx.require_principal()
        v = Violations()
        limit = paging.page_limit(v, request.limit if request.HasField("limit") else None)
        after_id = paging.cursor_in(v, request.cursor, CURSOR_KIND) if request.cursor else None
        v.raise_if_any()
        query = select(mw).where(mw.c.org_id == principal.org_id)
        if after_id is not None:
            query = query.where(mw.c.id > after_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query.order_by(mw.c.id).limit(limit + 1))).all()
        page, more = rows[:limit], len(rows) > limit
        now = clock.precise_now()
        return maintenance_pb2.ListMaintenanceWindowsResponse(
            windows=[store.projection(row, self.calendar.state(row, now)) for row in page],
            next_cursor=paging.cursor_out(page[-1].id, CURSOR_KIND) if more and page else "",
        )

    async def CreateMaintenanceWindow(
        self, request: maintenance_pb2.CreateMaintenanceWindowRequest, ctx: CallContext
    ) -> maintenance_pb2.CreateMaintenanceWindowResponse:
        principal = ctx.require_principal()
        given = store.present_fields(request.window)
        m = store.merge(None, given)
        v = Violations()
        self._check(m, given, v, patched=False)
        async with self.db.write() as conn:
            await self._check_monitors(conn, principal.org_id, m["monitorIds"], v)
            v.raise_if_any()
            window_id = await store.insert_window(conn, principal.org_id, m, clock.now())
            window = await self._projection(conn, principal.org_id, window_id)
            await self.calendar.refresh(conn)
            after = self._notice(await self._row(conn, principal.org_id, window_id))
            told = await queue_maintenance_notices(conn, principal.org_id, before=None, after=after, now=clock.now())
        if told:
            self.notify()
        ctx.audit.resource = f"maintenance-window:{window_id}"
        ctx.audit.after = store.as_input(m)
        return maintenance_pb2.CreateMaintenanceWindowResponse(window=window)

    async def GetMaintenanceWindow(
        self, request: maintenance_pb2.GetMaintenanceWindowRequest, ctx: CallContext
    ) -> maintenance_pb2.GetMaintenanceWindowResponse:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            window = await self._projection(conn, principal.org_id, request.id)
        return maintenance_pb2.GetMaintenanceWindowResponse(window=window)

    async def UpdateMaintenanceWindow(
        self, request: maintenance_pb2.UpdateMaintenanceWindowRequest, ctx: CallContext
    ) -> maintenance_pb2.UpdateMaintenanceWindowResponse:
        principal = ctx.require_principal()
        v = Violations()
        mask = list(request.update_mask.paths) if request.HasField("update_mask") else None
        for bad in store.unknown_mask_paths(mask or []):
            v.add("updateMask", "invalid_string", f"Unknown field in update mask: '{bad}'")
        v.raise_if_any()
        given = store.present_fields(request.window, mask)
        async with self.db.write() as conn:
            row = await self._row(conn, principal.org_id, request.id, lock=True)
            before = store.settings(row)
            m = store.merge(before, given)
            self._check(m, given, v, patched=True)
            if "monitorIds" in given:
                await self._check_monitors(conn, principal.org_id, m["monitorIds"], v)
            v.raise_if_any()
            await store.update_window(conn, row.id, m, clock.now())
            window = await self._projection(conn, principal.org_id, row.id)
            await self.calendar.refresh(conn)
            after = self._notice(await self._row(conn, principal.org_id, row.id))
            told = await queue_maintenance_notices(
                conn, principal.org_id, before=self._notice(row), after=after, now=clock.now()
            )
        if told:
            self.notify()
        ctx.audit.resource = f"maintenance-window:{request.id}"
        ctx.audit.before, ctx.audit.after = store.as_input(before), store.as_input(m)
        return maintenance_pb2.UpdateMaintenanceWindowResponse(window=window)

    async def DeleteMaintenanceWindow(
        self, request: maintenance_pb2.DeleteMaintenanceWindowRequest, ctx: CallContext
    ) -> maintenance_pb2.DeleteMaintenanceWindowResponse:
        principal = ctx.require_principal()
        async with self.db.write() as conn:
            row = await self._row(conn, principal.org_id, request.id, lock=True)
            before = self._notice(row)
            await conn.execute(delete(mw).where(mw.c.id == row.id))
            await self.calendar.refresh(conn)
            told = await queue_maintenance_notices(conn, principal.org_id, before=before, after=None, now=clock.now())
        if told:
            self.notify()
        ctx.audit.resource = f"maintenance-window:{request.id}"
        ctx.audit.before = store.as_input(store.settings(row))
        return maintenance_pb2.DeleteMaintenanceWindowResponse()
