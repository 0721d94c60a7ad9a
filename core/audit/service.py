"""GET /audit-logs: filters, cursor pagination, JSON or RFC 4180 CSV."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from google.api import httpbody_pb2
from google.protobuf import struct_pb2
from observe.v1 import audit_pb2, audit_pb2_grpc
from sqlalchemy import select

from core import clock
from core.errors import Violations
from core.rpc import paging
from core.rpc.context import CallContext
from core.storage import tables as t
from core.storage.db import Database

CSV_COLUMNS = [
    "id",
    "createdAt",
    "actorUserId",
    "actorPatId",
    "actorEmail",
    "action",
    "resource",
    "changedFields",
    "diff",
    "ip",
    "ua",
]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    """A CSV cell that spreadsheets will not run as a formula (OWASP)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _entry(row: Any) -> audit_pb2.AuditLogEntry:
    meta = struct_pb2.Struct()
    meta.update(json.loads(row.meta))
    return audit_pb2.AuditLogEntry(
        id=row.id,
        created_at=clock.to_timestamp(row.created_at),
        actor_user_id=row.actor_user_id,
        actor_pat_id=row.actor_pat_id,
        actor_email=row.actor_email,
        action=row.action,
        resource=row.resource,
        meta=meta,
    )


def _csv(rows: list[Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        meta = json.loads(row.meta)
        writer.writerow(
            [
                safe_cell(v)
                for v in (
                    row.id,
                    clock.to_timestamp(row.created_at).ToJsonString(),
                    row.actor_user_id,
                    row.actor_pat_id,
                    row.actor_email,
                    row.action,
                    row.resource,
                    ";".join(meta.get("changedFields", [])),
                    json.dumps(meta.get("diff", {}), separators=(",", ":"), sort_keys=True),
                    meta.get("ip", ""),
                    meta.get("ua", ""),
                )
            ]
        )
    return out.getvalue().encode()


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, *, db: Database) -> None:
        self.db = db

    async def ListAuditLogs(
        self, request: audit_pb2.ListAuditLogsRequest, ctx: CallContext
    ) -> audit_pb2.ListAuditLogsResponse:
        principal = ctx.require_principal()
        v = Violations()
        limit = paging.page_limit(v, request.limit if request.HasField("limit") else None)
        before_id = paging.cursor_in(v, request.cursor) if request.cursor else None
        v.raise_if_any()
        a = t.audit_logs
        query = select(a).where(a.c.org_id == principal.org_id).order_by(a.c.id.desc()).limit(limit + 1)
        if request.action:
            query = query.where(a.c.action == request.action)
        if request.HasField("actor"):
            query = query.where(a.c.actor_user_id == request.actor)
        if request.HasField("pat_id"):
            query = query.where(a.c.actor_pat_id == request.pat_id)
        if request.HasField("from_time"):
            query = query.where(a.c.created_at >= clock.from_timestamp(request.from_time))
        if request.HasField("to_time"):
            query = query.where(a.c.created_at <= clock.from_timestamp(request.to_time))
        if before_id is not None:
            query = query.where(a.c.id < before_id)
        async with self.db.read() as conn:
            rows = list((await conn.execute(query)).all())
        page, more = rows[:limit], len(rows) > limit
        response = audit_pb2.ListAuditLogsResponse(next_cursor=paging.cursor_out(page[-1].id) if more and page else "")
        if request.format == "csv":
            response.csv.CopyFrom(httpbody_pb2.HttpBody(content_type="text/csv; charset=utf-8", data=_csv(page)))
        else:
            response.entries.extend(_entry(row) for row in page)
        return response
