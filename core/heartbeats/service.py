"""HeartbeatService: the ping route and the pings log.

A ping is answered when :class:`core.heartbeats.ingest.PingWriter` has
committed it; an unknown or rotated token is 404 HEARTBEAT_TOKEN_UNKNOWN.
Decisions the contract leaves open are written down in docs/heartbeats.md.
"""

from __future__ import annotations

import asyncio

from observe.v1 import heartbeats_pb2, heartbeats_pb2_grpc
from sqlalchemy import select

from core import clock
from core.errors import ErrorCode, ObserveError, Violations, not_found
from core.heartbeats.ingest import BODY_KEPT, Ping, PingWriter
from core.heartbeats.tables import heartbeat_pings
from core.rpc import paging
from core.rpc.context import CallContext
from core.storage import tables as t
from core.storage.db import Database
from core.tokens.secrets import token_hash

CURSOR_KIND = "p"
BODY_SHOWN = 10_240  # bytes of a body a listed ping shows
KIND_NAMES = {
    "success": heartbeats_pb2.PING_KIND_SUCCESS,
    "start": heartbeats_pb2.PING_KIND_START,
    "fail": heartbeats_pb2.PING_KIND_FAIL,
    "exit": heartbeats_pb2.PING_KIND_EXIT,
}


def _unknown() -> ObserveError:
    return ObserveError(ErrorCode.ERROR_CODE_HEARTBEAT_TOKEN_UNKNOWN, "unknown heartbeat token (rotated or deleted?)")


class HeartbeatService(heartbeats_pb2_grpc.HeartbeatServiceServicer):
    def __init__(self, *, db: Database, writer: PingWriter) -> None:
        self.db = db
        self.writer = writer

    async def Ping(self, request: heartbeats_pb2.PingRequest, ctx: CallContext) -> heartbeats_pb2.PingResponse:
        digest = token_hash(request.token)
        if self.writer.known_unknown(digest):
            raise _unknown()
        signal = request.signal
        if signal in ("", "start", "fail"):
            kind, exit_status = signal or "success", None
        else:
            kind, exit_status = "exit", int(signal)  # 0–255: the proto's pattern
        data = request.payload.data
        ping = Ping(
            token_hash=digest,
            kind=kind,
            exit_status=exit_status,
            rid=request.rid if request.HasField("rid") else None,
            at=clock.precise_now(),
            ip=ctx.ip,
            user_agent=ctx.user_agent,
            body=data[:BODY_KEPT],
            body_bytes=len(data),
            future=asyncio.get_running_loop().create_future(),
        )
        if not await self.writer.submit(ping):
            raise _unknown()
        return heartbeats_pb2.PingResponse(ok=True)

    async def ListPings(
        self, request: heartbeats_pb2.ListPingsRequest, ctx: CallContext
    ) -> heartbeats_pb2.ListPingsResponse:
        principal = ctx.require_principal()
        v = Violations()
        limit = paging.page_limit(v, request.limit if request.HasField("limit") else None)
        before_id = paging.cursor_in(v, request.cursor, CURSOR_KIND) if request.cursor else None
        v.raise_if_any()
        p = heartbeat_pings.c
        query = select(heartbeat_pings).where(p.monitor_id == request.id)
        if before_id is not None:
            query = query.where(p.id < before_id)
        async with self.db.read() as conn:
            m = t.monitors.c
            owner = (
                await conn.execute(select(m.id).where(m.id == request.id, m.org_id == principal.org_id))
            ).one_or_none()
            if owner is None:
                raise not_found("monitor")
            rows = list((await conn.execute(query.order_by(p.id.desc()).limit(limit + 1))).all())
        page, more = rows[:limit], len(rows) > limit
        out = heartbeats_pb2.ListPingsResponse(
            next_cursor=paging.cursor_out(page[-1].id, CURSOR_KIND) if more and page else ""
        )
        for row in page:
            ping = out.pings.add(
                id=str(row.id),
                kind=KIND_NAMES[row.kind],
                ip=row.ip,
                user_agent=row.user_agent,
                body_bytes=row.body_bytes,
                body=bytes(row.body or b"")[:BODY_SHOWN].decode("utf-8", errors="replace"),
            )
            ping.at.CopyFrom(clock.to_precise_timestamp(row.at))
            if row.exit_status is not None:
                ping.exit_status = row.exit_status
            if row.runtime_ms is not None:
                ping.runtime_ms = row.runtime_ms
            if row.rid is not None:
                ping.rid = row.rid
        return out
