"""LogAlertService: CRUD for log alerts.

The proto declares the field rules (the pipeline checks a create whole); a
patch is re-checked here as the merged alert, as maintenance windows and
monitors are. What the proto cannot say stays here: the query must parse
(400 on ``query`` naming the position), and alert URLs obey the target
policy (TARGET_NOT_ALLOWED) as a monitor's do. A change to what is counted
(query, threshold, window, grouping, paused) makes the alert due at once.

Deleting an alert resolves its open incidents with a timeline update saying
so and sends nothing (its channels go with it); its incidents stay, still
naming it by ``logAlertId``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from observe.v1 import log_alerts_pb2, log_alerts_pb2_grpc
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core import clock
from core.checks import targets
from core.errors import FieldViolation, Violations, not_found
from core.incidents import store as incident_store
from core.incidents.tables import incidents
from core.log_alerts import store
from core.log_alerts.tables import log_alerts as la
from core.logs.query import QueryError, parse
from core.monitors.validation import raise_target_problems
from core.rpc import paging
from core.rpc.context import CallContext
from core.rpc.validator import ASCII_SPACES, VALIDATOR
from core.storage.db import Database
from core.storage.sealing import Sealer

CURSOR_KIND = "la"
_URL_FIELDS = ("alertSlackUrl", "alertWebhookUrl", "alertDiscordUrl")


class LogAlertService(log_alerts_pb2_grpc.LogAlertServiceServicer):
    def __init__(self, *, db: Database, sealer: Sealer, allow_private: bool) -> None:
        self.db = db
        self.store = store.LogAlertStore(sealer)
        self.allow_private = allow_private

    # ---- helpers -------------------------------------------------------------

    async def _row(self, conn: AsyncConnection, org_id: int, alert_id: int, *, lock: bool = False) -> Any:
        query = select(la).where(la.c.id == alert_id, la.c.org_id == org_id)
        if lock and not self.db.is_sqlite:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise not_found("log alert")
        return row

    def _check(self, m: dict[str, Any], given: dict[str, Any], *, patched: bool) -> None:
        """The merged alert's rules: the proto's (for a patch; the pipeline
        checked a create whole), the query's grammar, then the target policy."""
        v = Violations()
        if isinstance(m.get("name"), str):  # the proto's pattern: more than ASCII spaces, which are trimmed
            m["name"] = m["name"].strip(ASCII_SPACES)
        if patched:
            v.items.extend(VALIDATOR.violations(store.as_input(m), patch=False))
        if "query" in given and isinstance(m.get("query"), str) and not any(f.path == "query" for f in v.items):
            try:
                parse(m["query"])
            except QueryError as exc:
                v.add("query", "invalid_string", str(exc))
        v.raise_if_any()
        if not self.allow_private:
            problems = []
            for key in _URL_FIELDS:
                host = _host(m.get(key))
                problem = targets.static_target_problem(host) if host else None
                if problem:
                    problems.append(FieldViolation(key, "custom", problem))
            raise_target_problems(problems)

    async def _projection(self, conn: AsyncConnection, org_id: int, alert_id: int) -> log_alerts_pb2.LogAlert:
        row = await self._row(conn, org_id, alert_id)
        states = await store.group_states(conn, [row.id])
        return self.store.projection(row, states[row.id])

    # ---- RPCs ----------------------------------------------------------------

    async def ListLogAlerts(
        self, request: log_alerts_pb2.ListLogAlertsRequest, ctx: CallContext
    ) -> log_alerts_pb2.ListLogAlertsResponse:
        principal = ctx.require_principal()
        v = Violations()
        limit = paging.page_limit(v, request.limit if request.HasField("limit") else None)
        after_id = paging.cursor_in(v, request.cursor, CURSOR_KIND) if request.cursor else None
        v.raise_if_any()
        query = select(la).where(la.c.org_id == principal.org_id)
        if after_id is not None:
            query = query.where(la.c.id > after_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query.order_by(la.c.id).limit(limit + 1))).all()
            page, more = rows[:limit], len(rows) > limit
            states = await store.group_states(conn, [row.id for row in page])
        return log_alerts_pb2.ListLogAlertsResponse(
            alerts=[self.store.projection(row, states[row.id]) for row in page],
            next_cursor=paging.cursor_out(page[-1].id, CURSOR_KIND) if more and page else "",
        )

    async def CreateLogAlert(
        self, request: log_alerts_pb2.CreateLogAlertRequest, ctx: CallContext
    ) -> log_alerts_pb2.CreateLogAlertResponse:
        principal = ctx.require_principal()
        given = store.present_fields(request.alert)
        m = store.merge(None, given)
        self._check(m, given, patched=False)
        async with self.db.write() as conn:
            alert_id = await self.store.insert(conn, principal.org_id, m, clock.now())
            alert = await self._projection(conn, principal.org_id, alert_id)
        ctx.audit.resource = f"log-alert:{alert_id}"
        ctx.audit.after = store.as_input(m)
        return log_alerts_pb2.CreateLogAlertResponse(alert=alert)

    async def GetLogAlert(
        self, request: log_alerts_pb2.GetLogAlertRequest, ctx: CallContext
    ) -> log_alerts_pb2.GetLogAlertResponse:
        principal = ctx.require_principal()
        async with self.db.read() as conn:
            alert = await self._projection(conn, principal.org_id, request.id)
        return log_alerts_pb2.GetLogAlertResponse(alert=alert)

    async def UpdateLogAlert(
        self, request: log_alerts_pb2.UpdateLogAlertRequest, ctx: CallContext
    ) -> log_alerts_pb2.UpdateLogAlertResponse:
        principal = ctx.require_principal()
        v = Violations()
        mask = list(request.update_mask.paths) if request.HasField("update_mask") else None
        for bad in store.unknown_mask_paths(mask or []):
            v.add("updateMask", "invalid_string", f"Unknown field in update mask: '{bad}'")
        v.raise_if_any()
        given = store.present_fields(request.alert, mask)
        async with self.db.write() as conn:
            row = await self._row(conn, principal.org_id, request.id, lock=True)
            before = self.store.settings(row)
            m = store.merge(before, given)
            self._check(m, given, patched=True)
            due = any(m.get(key) != before.get(key) for key in store.EVALUATION_FIELDS)
            await self.store.update(conn, row, m, clock.now(), due=due)
            alert = await self._projection(conn, principal.org_id, row.id)
        ctx.audit.resource = f"log-alert:{row.id}"
        ctx.audit.before, ctx.audit.after = store.as_input(before), store.as_input(m)
        return log_alerts_pb2.UpdateLogAlertResponse(alert=alert)

    async def DeleteLogAlert(
        self, request: log_alerts_pb2.DeleteLogAlertRequest, ctx: CallContext
    ) -> log_alerts_pb2.DeleteLogAlertResponse:
        principal = ctx.require_principal()
        now = clock.now()
        async with self.db.write() as conn:
            row = await self._row(conn, principal.org_id, request.id, lock=True)
            still_open = (
                await conn.execute(
                    select(incidents.c.id).where(incidents.c.log_alert_id == row.id, incidents.c.resolved_at.is_(None))
                )
            ).scalars()
            for incident_id in list(still_open):
                await incident_store.resolve(
                    conn, incident_id, message=f"The log alert {row.name} was deleted.",
                    author_user_id=principal.user_id, now=now, automatic=False,
                )  # fmt: skip
            await conn.execute(delete(la).where(la.c.id == row.id))
        ctx.audit.resource = f"log-alert:{row.id}"
        ctx.audit.before = store.as_input(self.store.settings(row))
        return log_alerts_pb2.DeleteLogAlertResponse()


def _host(url: Any) -> str | None:
    if not isinstance(url, str):
        return None
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None
