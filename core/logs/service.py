"""LogService: ingest (our JSON, OTLP/HTTP, OTLP/gRPC), search and live tail.

Every ingest path parses into :class:`core.logs.records.LogRecord` and ends
in :meth:`LogService._ingest`: the request's size is counted against the
PAT's daily cap and the plan's monthly cap (all or nothing), the records go
to the one batch writer, and the reply waits for their commit. A write that
fails gives the bytes back to both caps; a client that leaves changes
nothing (what the writer stores is counted).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, timedelta
from typing import Any

import orjson
from google.protobuf import json_format, struct_pb2
from observe.v1 import logs_pb2, logs_pb2_grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from core import clock
from core.accounts.plans import PlanBook
from core.errors import ErrorCode, FieldViolation, ObserveError, Violations, validation_failed
from core.logs import otlp
from core.logs.match import compile_matcher
from core.logs.query import QueryError, parse
from core.logs.records import LogBodyError, LogRecord, TooManyRecordsError, batch_size, parse_api_body
from core.logs.store import LogStore, StoredRecord, id_ceiling, id_floor
from core.logs.tail import TailBroker
from core.logs.writer import LogWriter
from core.rpc import caps, paging
from core.rpc.context import CallContext, Principal
from core.storage.db import Database

CURSOR_KIND = "l"
DEFAULT_RANGE = timedelta(hours=1)
REJECTIONS_SHOWN = 100
PROTOBUF = "application/x-protobuf"
MAX_ID = 2**63 - 1


class LogService(logs_pb2_grpc.LogServiceServicer):
    def __init__(self, *, db: Database, store: LogStore, writer: LogWriter, tails: TailBroker, plans: PlanBook) -> None:
        self.db = db
        self.store = store
        self.writer = writer
        self.tails = tails
        self.plans = plans

    # ------------------------------------------------------------ ingest

    async def _ingest(self, principal: Principal, records: Sequence[LogRecord]) -> None:
        """Caps, then the writer; returns once the records are committed.

        Shielded from cancellation: the gateway cancels a call whose client
        has left, but the writer still stores what it was given, so the caps
        must still count it (a cancelled wait used to refund the bytes of
        records then written: leaving made ingest free)."""
        if not records:
            return
        task = asyncio.ensure_future(self._cap_and_write(principal, records))
        task.add_done_callback(_consume_outcome)
        await asyncio.shield(task)

    async def _cap_and_write(self, principal: Principal, records: Sequence[LogRecord]) -> None:
        self.writer.check_room(len(records))  # refused before anything is counted
        size = batch_size(records)
        org_id = principal.org_id
        month = await self.plans.reserve_log_bytes(self.db, org_id, size)
        try:
            day = await caps.consume_log_bytes(self.db, principal, size)
        except BaseException:
            await self.plans.add_usage(self.db, org_id, log_bytes=-size, month=month)
            raise
        try:
            await self.writer.submit(org_id, records)
        except BaseException:
            # Given back where they were counted, also past midnight.
            await caps.refund_log_bytes(self.db, principal, size, day)
            await self.plans.add_usage(self.db, org_id, log_bytes=-size, month=month)
            raise

    async def IngestLogs(self, request: logs_pb2.IngestLogsRequest, ctx: CallContext) -> logs_pb2.IngestLogsResponse:
        principal = ctx.require_principal()
        now = clock.precise_now()
        try:
            records, rejections = parse_api_body(
                request.body.data, request.body.content_type, now, self.writer.ids.window(now)
            )
        except (LogBodyError, TooManyRecordsError) as exc:
            raise exc.to_error() from None
        if not records:
            if not rejections:
                raise validation_failed([FieldViolation("", "too_small", "The body holds no log record")])
            raise validation_failed([r.violation() for r in rejections[:REJECTIONS_SHOWN]])
        await self._ingest(principal, records)
        return logs_pb2.IngestLogsResponse(
            accepted=len(records),
            rejected=len(rejections),
            rejections=[
                logs_pb2.LogRejection(index=r.index, path=r.path, code=r.code, message=r.message)
                for r in rejections[:REJECTIONS_SHOWN]
            ],
        )

    async def ExportOtlpLogs(
        self, request: logs_pb2.ExportOtlpLogsRequest, ctx: CallContext
    ) -> logs_pb2.ExportOtlpLogsResponse:
        principal = ctx.require_principal()
        media = request.body.content_type.split(";", 1)[0].strip().lower()
        if media not in (PROTOBUF, "application/json"):
            raise ObserveError(
                ErrorCode.ERROR_CODE_UNSUPPORTED_MEDIA_TYPE, "Send application/x-protobuf or application/json"
            )
        binary = media == PROTOBUF
        now = clock.precise_now()
        try:
            decode = otlp.parse_otlp_protobuf if binary else otlp.parse_otlp_json
            records, rejected, message = decode(request.body.data, now, self.writer.ids.window(now))
        except otlp.OtlpDecodeError as exc:
            raise validation_failed([FieldViolation("", "invalid_type", str(exc))]) from None
        except TooManyRecordsError as exc:
            raise exc.to_error() from None
        # Errors of a protobuf request go back as a google.rpc.Status (the gateway, for every route).
        await self._ingest(principal, records)
        reply = _export_response(rejected, message)
        if binary:
            body = reply.SerializeToString()
        else:
            body = orjson.dumps(json_format.MessageToDict(reply)) if rejected else b"{}"
        response = logs_pb2.ExportOtlpLogsResponse()
        response.body.content_type = PROTOBUF if binary else "application/json"
        response.body.data = body
        return response

    async def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, ctx: CallContext
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        """OTLP/gRPC: opentelemetry.proto.collector.logs.v1.LogsService/Export."""
        principal = ctx.require_principal()
        now = clock.precise_now()
        try:
            records, rejected, message = otlp.map_otlp_request(request, now, self.writer.ids.window(now))
        except TooManyRecordsError as exc:
            raise exc.to_error() from None
        await self._ingest(principal, records)
        return _export_response(rejected, message)

    # ------------------------------------------------------------ search

    async def SearchLogs(self, request: logs_pb2.SearchLogsRequest, ctx: CallContext) -> logs_pb2.SearchLogsResponse:
        principal = ctx.require_principal()
        v = Violations()
        node = _query(request.q, v)
        now = clock.precise_now()
        end = request.to_time.ToDatetime(UTC) if request.HasField("to_time") else now
        start = request.from_time.ToDatetime(UTC) if request.HasField("from_time") else end - DEFAULT_RANGE
        if start > end:
            v.add("from", "custom", "'from' must not be after 'to'")
        limit = paging.page_limit(v, request.limit if request.HasField("limit") else None)
        before = paging.cursor_in(v, request.cursor, CURSOR_KIND) if request.cursor else None
        v.raise_if_any()
        # Times past what ids can hold match nothing there (never an overflow).
        low, high = max(0, id_floor(start)), min(MAX_ID, id_ceiling(end))
        if before is not None:
            high = min(high, before)
        found = await self.store.search(principal.org_id, node, low_id=low, high_id=high, limit=limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return logs_pb2.SearchLogsResponse(
            records=[record_message(r) for r in found],
            next_cursor=paging.cursor_out(found[-1].id, CURSOR_KIND) if more and found else "",
        )

    # ------------------------------------------------------------ tail

    async def TailLogs(
        self, request: logs_pb2.TailLogsRequest, ctx: CallContext
    ) -> AsyncIterator[logs_pb2.TailLogsResponse]:
        principal = ctx.require_principal()
        v = Violations()
        matcher = compile_matcher(_query(request.q, v))
        v.raise_if_any()
        async for batch in self.tails.subscribe(principal.org_id, matcher):
            yield logs_pb2.TailLogsResponse(records=[record_message(r) for r in batch])


def _consume_outcome(task: asyncio.Task[None]) -> None:
    """Marks a shielded ingest's failure as seen: its caller may have left (the client's error went nowhere)."""
    if not task.cancelled():
        task.exception()


def _query(q: str, v: Violations) -> Any:
    try:
        return parse(q)
    except QueryError as exc:
        v.add("q", "invalid_string", str(exc))
        return None


def _export_response(rejected: int, message: str) -> logs_service_pb2.ExportLogsServiceResponse:
    reply = logs_service_pb2.ExportLogsServiceResponse()
    if rejected:
        reply.partial_success.rejected_log_records = rejected
        reply.partial_success.error_message = message
    return reply


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if values:
        out.update(values)
    return out


def record_message(stored: StoredRecord) -> logs_pb2.LogRecord:
    """A stored record as the API shows it."""
    r = stored.record
    message = logs_pb2.LogRecord(
        id=format(stored.id, "x"),
        level=r.level,
        severity_number=r.severity_number,
        severity_text=r.severity_text,
        message=r.message,
        attributes=_struct(r.attributes),
        resource=_struct(r.resource),
        scope_name=r.scope_name,
        scope_version=r.scope_version,
    )
    message.timestamp.FromDatetime(r.timestamp)
    message.observed_at.FromDatetime(r.observed_at)
    if r.service is not None:
        message.service = r.service
    if r.trace_id is not None:
        message.trace_id = r.trace_id
    if r.span_id is not None:
        message.span_id = r.span_id
    return message
