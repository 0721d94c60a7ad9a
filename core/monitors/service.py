"""MonitorService: CRUD with strict validation, secrets, heartbeat-token
rotation, all-or-nothing bulk calls, and the history reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from observe.v1 import monitors_pb2, monitors_pb2_grpc
from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.accounts.plans import PlanBook
from core.alerts import ChannelSettings
from core.alerts.testing import send_test_alert
from core.errors import ErrorCode, FieldViolation, ObserveError, Violations, not_found
from core.monitors import history
from core.monitors import validation as val
from core.monitors.store import SELECT, MonitorStore, tagged
from core.rpc import paging
from core.rpc.context import CallContext
from core.storage import tables as t
from core.storage.db import Database

# Bulk calls write one audit entry; its diff lists the ids (and the patch).
BULK_RESOURCE = "monitors:bulk"


class MonitorService(monitors_pb2_grpc.MonitorServiceServicer):
    # The alert channels' settings (core/app.py sets them from Settings) for test alerts.
    alert_settings: ChannelSettings | None = None

    def __init__(
        self,
        *,
        db: Database,
        store: MonitorStore,
        plans: PlanBook,
        allow_private: bool,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.plans = plans
        self.allow_private = allow_private
        self.on_change = on_change or (lambda: None)

    # ---- helpers -----------------------------------------------------------

    def _checked(self, current: dict[str, Any] | None, given: dict[str, Any], v: Violations, prefix: str,
                 problems: list[FieldViolation]) -> dict[str, Any]:  # fmt: skip
        merged = val.merge(current, given)
        problems.extend(val.validate(merged, v, prefix, allow_private=self.allow_private, patched=current is not None))
        return merged

    async def _rows(self, conn: AsyncConnection, org_id: int, ids: list[int], *, lock: bool = False) -> list[Any]:
        query = SELECT.where(t.monitors.c.org_id == org_id, t.monitors.c.id.in_(ids))
        if lock and not self.db.is_sqlite:
            query = query.with_for_update(of=t.monitors)
        rows = {row.id: row for row in (await conn.execute(query)).all()}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise not_found("monitor")
        return [rows[i] for i in ids]

    async def _require_capacity(self, conn: AsyncConnection, org_id: int, adding: int) -> None:
        """PLAN_LIMIT_MONITORS when ``adding`` more would pass the plan. The
        org row is locked first (PostgreSQL), so concurrent creates queue."""
        plan_query = select(t.orgs.c.plan).where(t.orgs.c.id == org_id)
        if not self.db.is_sqlite:
            plan_query = plan_query.with_for_update()
        plan = (await conn.execute(plan_query)).scalar_one()
        limit = self.plans.limits(plan).monitors
        if limit is None:
            return
        count = (
            await conn.execute(select(func.count()).select_from(t.monitors).where(t.monitors.c.org_id == org_id))
        ).scalar_one()
        if count + adding > limit:
            raise ObserveError(
                ErrorCode.ERROR_CODE_PLAN_LIMIT_MONITORS, f"the {plan} plan allows {limit} monitors; {count} exist"
            )

    @staticmethod
    def _mask(request: Any, v: Violations, path: str) -> list[str] | None:
        if not request.HasField("update_mask"):
            return None
        paths = list(request.update_mask.paths)
        for bad in val.unknown_mask_paths(paths):
            v.add(path, "invalid_string", f"Unknown field in update mask: '{bad}'")
        return paths

    async def _create(self, conn: AsyncConnection, org_id: int, items: list[dict[str, Any]]) -> list[int]:
        await self._require_capacity(conn, org_id, len(items))
        now = clock.now()
        return [await self.store.insert(conn, org_id, m, now) for m in items]

    async def _projections(self, conn: AsyncConnection, org_id: int, ids: list[int]) -> list[monitors_pb2.Monitor]:
        return [self.store.projection(row) for row in await self._rows(conn, org_id, ids)]

    # ---- CRUD ----------------------------------------------------------------

    async def CreateMonitor(
        self, request: monitors_pb2.CreateMonitorRequest, ctx: CallContext
    ) -> monitors_pb2.CreateMonitorResponse:
        principal = ctx.require_principal()
        v, problems = Violations(), list[FieldViolation]()
        m = self._checked(None, val.present_fields(request.monitor), v, "", problems)
        v.raise_if_any()
        val.raise_target_problems(problems)
        async with self.db.write() as conn:
            (monitor_id,) = await self._create(conn, principal.org_id, [m])
            (monitor,) = await self._projections(conn, principal.org_id, [monitor_id])
        ctx.audit.resource = f"monitor:{monitor_id}"
        ctx.audit.after = self.store.input_view(m)
        self.on_change()
        return monitors_pb2.CreateMonitorResponse(monitor=monitor)

    async def ListMonitors(
        self, request: monitors_pb2.ListMonitorsRequest, ctx: CallContext
    ) -> monitors_pb2.ListMonitorsResponse:
        principal = ctx.require_principal()
        v = Violations()
        limit = paging.page_limit(v, request.limit if request.HasField("limit") else None)
        after_id = paging.cursor_in(v, request.cursor, "m") if request.cursor else None
        v.raise_if_any()
        query = SELECT.where(t.monitors.c.org_id == principal.org_id)
        tags = list(dict.fromkeys(request.tag))  # at most 20: the proto's rule
        if tags:
            query = query.where(t.monitors.c.id.in_(tagged(principal.org_id, tags)))
        if after_id is not None:
            query = query.where(t.monitors.c.id > after_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query.order_by(t.monitors.c.id).limit(limit + 1))).all()
        page, more = rows[:limit], len(rows) > limit
        return monitors_pb2.ListMonitorsResponse(
            monitors=[self.store.projection(row) for row in page],
            next_cursor=paging.cursor_out(page[-1].id, "m") if more and page else "",
        )

    async def GetMonitor(
        self, request: monitors_pb2.GetMonitorRequest, ctx: CallContext
    ) -> monitors_pb2.GetMonitorResponse:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            (monitor,) = await self._projections(conn, principal.org_id, [request.id])
        return monitors_pb2.GetMonitorResponse(monitor=monitor)

    async def UpdateMonitor(
        self, request: monitors_pb2.UpdateMonitorRequest, ctx: CallContext
    ) -> monitors_pb2.UpdateMonitorResponse:
        principal = ctx.require_principal()
        v, problems = Violations(), list[FieldViolation]()
        mask = self._mask(request, v, "updateMask")
        v.raise_if_any()
        given = val.present_fields(request.monitor, mask)
        async with self.db.write() as conn:
            (row,) = await self._rows(conn, principal.org_id, [request.id], lock=True)
            before = self.store.settings(row)
            m = self._checked(before, given, v, "", problems)
            v.raise_if_any()
            val.raise_target_problems(problems)
            await self.store.update(conn, row, m, clock.now())
            (monitor,) = await self._projections(conn, principal.org_id, [request.id])
        ctx.audit.resource = f"monitor:{request.id}"
        ctx.audit.before, ctx.audit.after = self.store.input_view(before), self.store.input_view(m)
        self.on_change()
        return monitors_pb2.UpdateMonitorResponse(monitor=monitor)

    async def DeleteMonitor(
        self, request: monitors_pb2.DeleteMonitorRequest, ctx: CallContext
    ) -> monitors_pb2.DeleteMonitorResponse:
        principal = ctx.require_principal()
        async with self.db.write() as conn:
            (row,) = await self._rows(conn, principal.org_id, [request.id], lock=True)
            ctx.audit.before = self.store.input_view(self.store.settings(row))
            await conn.execute(delete(t.monitors).where(t.monitors.c.id == row.id))
        ctx.audit.resource = f"monitor:{request.id}"
        self.on_change()
        return monitors_pb2.DeleteMonitorResponse()

    # ---- secrets ---------------------------------------------------------

    async def GetMonitorSecrets(
        self, request: monitors_pb2.GetMonitorSecretsRequest, ctx: CallContext
    ) -> monitors_pb2.GetMonitorSecretsResponse:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            (row,) = await self._rows(conn, principal.org_id, [request.id])
        ctx.audit.resource = f"monitor:{request.id}"
        return monitors_pb2.GetMonitorSecretsResponse(secrets=self.store.secrets_message(row, self.store.settings(row)))

    async def RotateHeartbeatToken(
        self, request: monitors_pb2.RotateHeartbeatTokenRequest, ctx: CallContext
    ) -> monitors_pb2.RotateHeartbeatTokenResponse:
        principal = ctx.require_principal()
        async with self.db.write() as conn:
            (row,) = await self._rows(conn, principal.org_id, [request.id], lock=True)
            if row.type != "heartbeat":  # only heartbeat monitors have the token this names
                raise ObserveError(ErrorCode.ERROR_CODE_NOT_FOUND, f"monitor {row.id} is not a heartbeat monitor")
            _, token_hash, sealed = self.store.new_heartbeat_token()
            await conn.execute(
                update(t.monitors)
                .where(t.monitors.c.id == row.id)
                .values(heartbeat_token_hash=token_hash, heartbeat_token=sealed)
            )
            (row,) = await self._rows(conn, principal.org_id, [request.id])
        secrets = self.store.secrets_message(row, self.store.settings(row))
        ctx.audit.resource = f"monitor:{request.id}"
        ctx.audit.after = monitors_pb2.MonitorSecrets(id=row.id, heartbeat_token=secrets.heartbeat_token)
        return monitors_pb2.RotateHeartbeatTokenResponse(secrets=secrets)

    # ---- bulk --------------------------------------------------------------

    async def BulkCreateMonitors(
        self, request: monitors_pb2.BulkCreateMonitorsRequest, ctx: CallContext
    ) -> monitors_pb2.BulkCreateMonitorsResponse:
        principal = ctx.require_principal()
        v, problems = Violations(), list[FieldViolation]()
        items = [
            self._checked(None, val.present_fields(item), v, f"monitors[{i}].", problems)
            for i, item in enumerate(request.monitors)
        ]
        v.raise_if_any()
        val.raise_target_problems(problems)
        async with self.db.write() as conn:
            ids = await self._create(conn, principal.org_id, items)
            monitors = await self._projections(conn, principal.org_id, ids)
        ctx.audit.resource = BULK_RESOURCE
        ctx.audit.after = monitors_pb2.BulkDeleteMonitorsRequest(ids=ids)  # the entry names the ids created
        self.on_change()
        return monitors_pb2.BulkCreateMonitorsResponse(monitors=monitors)

    async def BulkUpdateMonitors(
        self, request: monitors_pb2.BulkUpdateMonitorsRequest, ctx: CallContext
    ) -> monitors_pb2.BulkUpdateMonitorsResponse:
        principal = ctx.require_principal()
        ids = list(dict.fromkeys(request.ids))
        v, problems = Violations(), list[FieldViolation]()
        mask = self._mask(request, v, "updateMask")
        v.raise_if_any()
        given = val.present_fields(request.patch, mask)
        async with self.db.write() as conn:
            rows = await self._rows(conn, principal.org_id, ids, lock=True)
            merged = [self._checked(self.store.settings(row), given, v, "patch.", problems) for row in rows]
            _dedupe(v, problems)
            v.raise_if_any()
            val.raise_target_problems(problems)
            now = clock.now()
            for row, m in zip(rows, merged, strict=True):
                await self.store.update(conn, row, m, now)
            monitors = await self._projections(conn, principal.org_id, ids)
        ctx.audit.resource = BULK_RESOURCE
        self.on_change()
        return monitors_pb2.BulkUpdateMonitorsResponse(monitors=monitors)

    async def BulkDeleteMonitors(
        self, request: monitors_pb2.BulkDeleteMonitorsRequest, ctx: CallContext
    ) -> monitors_pb2.BulkDeleteMonitorsResponse:
        principal = ctx.require_principal()
        ids = list(dict.fromkeys(request.ids))
        async with self.db.write() as conn:
            await self._rows(conn, principal.org_id, ids, lock=True)
            await conn.execute(
                delete(t.monitors).where(and_(t.monitors.c.org_id == principal.org_id, t.monitors.c.id.in_(ids)))
            )
        ctx.audit.resource = BULK_RESOURCE
        self.on_change()
        return monitors_pb2.BulkDeleteMonitorsResponse()

    # ---- alerts --------------------------------------------------------------

    async def TestMonitorAlert(
        self, request: monitors_pb2.TestMonitorAlertRequest, ctx: CallContext
    ) -> monitors_pb2.TestMonitorAlertResponse:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            (row,) = await self._rows(conn, principal.org_id, [request.id])
        ctx.audit.resource = f"monitor:{request.id}"
        settings = self.alert_settings or ChannelSettings(
            public_base=self.store.public_url, allow_private=self.allow_private
        )
        results = await send_test_alert(self.db, self.store, settings, row)
        return monitors_pb2.TestMonitorAlertResponse(results=results)

    # ---- history -------------------------------------------------------------

    async def _require_monitor(self, ctx: CallContext, monitor_id: int) -> None:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            found = (
                await conn.execute(
                    select(t.monitors.c.id).where(
                        t.monitors.c.id == monitor_id, t.monitors.c.org_id == principal.org_id
                    )
                )
            ).first()
        if found is None:
            raise not_found("monitor")

    async def ListMonitorChecks(
        self, request: monitors_pb2.ListMonitorChecksRequest, ctx: CallContext
    ) -> monitors_pb2.ListMonitorChecksResponse:
        v = Violations()
        limit = paging.page_limit(v, request.limit if request.HasField("limit") else None)
        before_id = paging.cursor_in(v, request.cursor, "c") if request.cursor else None
        v.raise_if_any()
        await self._require_monitor(ctx, request.id)
        return await history.list_checks(self.db, request.id, limit, before_id)

    async def GetMonitorStats(
        self, request: monitors_pb2.GetMonitorStatsRequest, ctx: CallContext
    ) -> monitors_pb2.GetMonitorStatsResponse:
        await self._require_monitor(ctx, request.id)
        return monitors_pb2.GetMonitorStatsResponse(stats=await history.stats(self.db, request.id, clock.now()))

    async def GetMonitorTimeline(
        self, request: monitors_pb2.GetMonitorTimelineRequest, ctx: CallContext
    ) -> monitors_pb2.GetMonitorTimelineResponse:
        window = history.timeline_window(request, clock.now())
        await self._require_monitor(ctx, request.id)
        return monitors_pb2.GetMonitorTimelineResponse(timeline=await history.timeline(self.db, request.id, window))


def _dedupe(v: Violations, problems: list[FieldViolation]) -> None:
    """One report per distinct problem: a patch bad for all 100 monitors says so once."""
    for items in (v.items, problems):
        items[:] = list(dict.fromkeys(items))
