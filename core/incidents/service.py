"""IncidentService: list, get, manual incidents, timeline updates,
acknowledge, resolve and postmortems.

Every change goes through :mod:`core.incidents.store` (as the incident
engine's do) and queues its alerts in the same transaction
(:func:`core.alerts.outbox.enqueue`), and the mail of status-page
subscribers for what the public sees (opened, a timeline update, resolved,
reopened; :func:`core.status_pages.subscriptions.queue_incident_notice});
the dispatcher is woken after the commit. Decisions the contract leaves open are written down in
docs/incidents.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from observe.v1 import incidents_pb2, incidents_pb2_grpc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.alerts import outbox
from core.errors import ErrorCode, ObserveError, Violations, not_found
from core.incidents import store
from core.incidents.tables import incident_updates, incidents
from core.monitors.store import MonitorStore
from core.rpc import paging
from core.rpc.context import CallContext
from core.status_pages.subscriptions import queue_incident_notice
from core.storage import tables as t
from core.storage.db import Database

CURSOR_KIND = "i"
OPENED_MESSAGE = "Incident opened"
RESOLVED_MESSAGE = "Incident resolved"


def _audit_view(incident: incidents_pb2.Incident) -> incidents_pb2.Incident:
    """What the audit log diffs: the incident's own fields, without the
    timeline, the delivery records and the running duration."""
    out = incidents_pb2.Incident()
    out.CopyFrom(incident)
    out.ClearField("updates")
    out.ClearField("deliveries")
    out.ClearField("duration_sec")
    return out


class IncidentService(incidents_pb2_grpc.IncidentServiceServicer):
    def __init__(self, *, db: Database, monitor_store: MonitorStore, notify: Callable[[], None]) -> None:
        self.db = db
        self.monitor_store = monitor_store
        self.notify = notify  # after a commit that wrote outbox rows: wakes the dispatcher

    # ---- helpers -----------------------------------------------------------

    async def _row(self, conn: AsyncConnection, org_id: int, incident_id: int, *, lock: bool = False) -> Any:
        row = await store.get_row(conn, incident_id, org_id=org_id, lock=lock)
        if row is None:
            raise not_found("incident")
        return row

    async def _alert(self, conn: AsyncConnection, row: Any, event: str, now: datetime) -> int:
        """Queues ``event`` about the incident (``row``: as before the change;
        the payload is read as of now, after it) to the channels of its monitor
        or log alert. Returns the rows written."""
        if row.monitor_id is None and row.log_alert_id is None:
            return 0
        return await outbox.enqueue(
            conn,
            org_id=row.org_id,
            monitor_id=row.monitor_id,
            log_alert_id=row.log_alert_id,
            incident_id=row.id,
            event=event,
            payload=await store.alert_payload(conn, row.id, self.monitor_store),
            now=now,
        )

    # ---- reads -------------------------------------------------------------

    async def ListIncidents(
        self, request: incidents_pb2.ListIncidentsRequest, ctx: CallContext
    ) -> incidents_pb2.ListIncidentsResponse:
        principal = ctx.require_principal()
        v = Violations()
        limit = paging.page_limit(v, request.limit if request.HasField("limit") else None)
        before_id = paging.cursor_in(v, request.cursor, CURSOR_KIND) if request.cursor else None
        start = clock.from_timestamp(request.from_time) if request.HasField("from_time") else None
        end = clock.from_timestamp(request.to_time) if request.HasField("to_time") else None
        if start is not None and end is not None and start > end:
            v.add("from", "too_big", "Must not be after to")
        v.raise_if_any()
        c = incidents.c
        query = select(incidents).where(c.org_id == principal.org_id)
        if request.status == "open":
            query = query.where(c.resolved_at.is_(None))
        elif request.status == "resolved":
            query = query.where(c.resolved_at.is_not(None))
        if request.HasField("monitor_id"):
            query = query.where(c.monitor_id == request.monitor_id)
        if start is not None:
            query = query.where(c.started_at >= start)
        if end is not None:
            query = query.where(c.started_at <= end)
        if before_id is not None:
            query = query.where(c.id < before_id)
        async with self.db.read() as conn:
            rows = list((await conn.execute(query.order_by(c.id.desc()).limit(limit + 1))).all())
            page, more = rows[:limit], len(rows) > limit
            updates = await store.updates_of(conn, [row.id for row in page])
        now = clock.now()
        return incidents_pb2.ListIncidentsResponse(
            incidents=[store.incident_message(row, updates[row.id], [], now) for row in page],
            next_cursor=paging.cursor_out(page[-1].id, CURSOR_KIND) if more and page else "",
        )

    async def GetIncident(
        self, request: incidents_pb2.GetIncidentRequest, ctx: CallContext
    ) -> incidents_pb2.GetIncidentResponse:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            row = await self._row(conn, principal.org_id, request.id)
            incident = await store.projection(conn, row, deliveries=True)
        return incidents_pb2.GetIncidentResponse(incident=incident)

    # ---- changes -------------------------------------------------------------

    async def CreateIncident(
        self, request: incidents_pb2.CreateIncidentRequest, ctx: CallContext
    ) -> incidents_pb2.CreateIncidentResponse:
        principal = ctx.require_principal()
        status = store.STATUS_NAMES[request.status] if request.HasField("status") else "investigating"
        message = request.message if request.HasField("message") else OPENED_MESSAGE
        monitor_id = request.monitor_id if request.HasField("monitor_id") else None
        now = clock.now()
        queued = 0
        async with self.db.write() as conn:
            if monitor_id is not None:
                query = select(t.monitors.c.id).where(
                    t.monitors.c.id == monitor_id, t.monitors.c.org_id == principal.org_id
                )
                if not self.db.is_sqlite:  # the engine locks the monitor too: one open incident per monitor
                    query = query.with_for_update()
                if (await conn.execute(query)).first() is None:
                    v = Violations()
                    v.add("monitorId", "custom", "No such monitor")
                    v.raise_if_any()
                if await store.open_incident_of(conn, monitor_id) is not None:
                    raise ObserveError(ErrorCode.ERROR_CODE_CONFLICT, f"monitor {monitor_id} has an open incident")
            incident_id = await store.open_incident(
                conn,
                org_id=principal.org_id,
                monitor_id=monitor_id,
                title=request.title,
                cause=None,
                started_at=now,
                automatic=False,
                message=message,
                author_user_id=principal.user_id,
                now=now,
                status=status,
            )
            row = await self._row(conn, principal.org_id, incident_id)
            queued = await self._alert(conn, row, "incident.opened", now)
            queued += await queue_incident_notice(conn, incident_id, "incident.opened", now)
            incident = await store.projection(conn, row, deliveries=True)
        ctx.audit.resource = f"incident:{incident_id}"
        ctx.audit.after = _audit_view(incident)
        if queued:
            self.notify()
        return incidents_pb2.CreateIncidentResponse(incident=incident)

    async def AddIncidentUpdate(
        self, request: incidents_pb2.AddIncidentUpdateRequest, ctx: CallContext
    ) -> incidents_pb2.AddIncidentUpdateResponse:
        principal = ctx.require_principal()
        status = store.STATUS_NAMES[request.status]
        now = clock.now()
        async with self.db.write() as conn:
            row = await self._row(conn, principal.org_id, request.id, lock=True)
            update_id = await store.add_update(
                conn, row.id, status=status, message=request.message, author_user_id=principal.user_id, now=now
            )
            event = None
            if status == "resolved" and row.resolved_at is None:
                event = "incident.resolved"
            elif status != "resolved" and row.resolved_at is not None:
                event = "incident.reopened"
            queued = await self._alert(conn, row, event, now) if event else 0
            if row.log_alert_id is None:  # a log alert's incidents are the org's own: no page shows them
                queued += await queue_incident_notice(conn, row.id, event or "incident.updated", now)
            update_row = (await conn.execute(select(incident_updates).where(incident_updates.c.id == update_id))).one()
        posted = store.update_message(update_row)
        ctx.audit.resource = f"incident:{row.id}"
        ctx.audit.after = posted
        if queued:
            self.notify()
        return incidents_pb2.AddIncidentUpdateResponse(update=posted)

    async def AcknowledgeIncident(
        self, request: incidents_pb2.AcknowledgeIncidentRequest, ctx: CallContext
    ) -> incidents_pb2.AcknowledgeIncidentResponse:
        principal = ctx.require_principal()
        now = clock.now()
        queued = 0
        async with self.db.write() as conn:
            row = await self._row(conn, principal.org_id, request.id, lock=True)
            before = await store.projection(conn, row, deliveries=False)
            if await store.acknowledge(conn, row.id, user_id=principal.user_id, pat_id=principal.pat_id, now=now):
                queued = await self._alert(conn, row, "incident.acknowledged", now)
            incident = await store.projection(conn, row.id, deliveries=True)
        ctx.audit.resource = f"incident:{row.id}"
        ctx.audit.before, ctx.audit.after = _audit_view(before), _audit_view(incident)
        if queued:
            self.notify()
        return incidents_pb2.AcknowledgeIncidentResponse(incident=incident)

    async def ResolveIncident(
        self, request: incidents_pb2.ResolveIncidentRequest, ctx: CallContext
    ) -> incidents_pb2.ResolveIncidentResponse:
        principal = ctx.require_principal()
        message = request.message if request.HasField("message") else RESOLVED_MESSAGE
        now = clock.now()
        queued = 0
        async with self.db.write() as conn:
            row = await self._row(conn, principal.org_id, request.id, lock=True)
            before = await store.projection(conn, row, deliveries=False)
            resolved = await store.resolve(
                conn, row.id, message=message, author_user_id=principal.user_id, now=now, automatic=False
            )
            if resolved:
                queued = await self._alert(conn, row, "incident.resolved", now)
                if row.log_alert_id is None:
                    queued += await queue_incident_notice(conn, row.id, "incident.resolved", now)
            incident = await store.projection(conn, row.id, deliveries=True)
        ctx.audit.resource = f"incident:{row.id}"
        ctx.audit.before, ctx.audit.after = _audit_view(before), _audit_view(incident)
        if queued:
            self.notify()
        return incidents_pb2.ResolveIncidentResponse(incident=incident)

    async def UpdateIncidentPostmortem(
        self, request: incidents_pb2.UpdateIncidentPostmortemRequest, ctx: CallContext
    ) -> incidents_pb2.UpdateIncidentPostmortemResponse:
        principal = ctx.require_principal()
        now = clock.now()
        async with self.db.write() as conn:
            row = await self._row(conn, principal.org_id, request.id, lock=True)
            before = await store.projection(conn, row, deliveries=False)
            await store.set_postmortem(conn, row.id, request.markdown, now)
            incident = await store.projection(conn, row.id, deliveries=True)
        ctx.audit.resource = f"incident:{row.id}"
        ctx.audit.before, ctx.audit.after = _audit_view(before), _audit_view(incident)
        return incidents_pb2.UpdateIncidentPostmortemResponse(incident=incident)
