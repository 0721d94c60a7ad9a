"""The collector's OTLP shipper against the real server (OTLP/HTTP and OTLP/gRPC), a local HTTP
receiver that answers 503/400, and a local gRPC LogsService that answers UNAVAILABLE with RetryInfo.

Backoff is shrunk to centiseconds so that only the servers' own delays (1 s) take time, and the two
delay tests run concurrently."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import grpc
import grpc.aio
import httpx
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from collector.config import ServerConfig
from collector.shipper import Backoff, Outcome, Result, Shipper, parse_retry_after
from collector.syslog import parse
from collector.syslog_otlp import to_otlp
from tests.conftest import SQLITE_ONLY, Persona, Server, free_port, register
from tests.receivers import Answer, recording_receiver

TINY_BACKOFF = Backoff(initial_sec=0.01, maximum_sec=0.02)
UNKNOWN_TOKEN = "obs_" + "Q" * 43


def syslog_batch(app: str, count: int) -> logs_service_pb2.ExportLogsServiceRequest:
    now = datetime.now(UTC)
    lines = [f"<11>1 {now.isoformat()} web-{i} {app} 42 ID{i} - shipped line {i}".encode() for i in range(count)]
    return to_otlp(parse(line, received_at=now, source_tag="edge", peer="192.0.2.7") for line in lines)


def config(endpoint: str, token: str, **overrides: object) -> ServerConfig:
    return ServerConfig(endpoint=endpoint, token=token, timeout_sec=5.0, **overrides)  # type: ignore[arg-type]


def search(persona: Persona, q: str) -> list[dict[str, object]]:
    with persona.client() as c:
        r = c.get("/api/v1/logs/search", params={"q": q})
    assert r.status_code == 200, r.text
    return list(r.json()["records"])


@SQLITE_ONLY
def test_syslog_batches_arrive_searchable_over_http_and_grpc_and_refusals_are_permanent(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    owner = register(server)
    writer = owner.mint(name="collector", scopes=["logs:write"])["token"]
    reader = owner.mint(name="reader only", scopes=["logs:read"])["token"]
    http = server.base_url + "/api/v1/otlp"
    grpc_endpoint = "grpc://" + server.grpc_target
    apps = {"http": f"ship-http-{uuid.uuid4().hex[:8]}", "grpc": f"ship-grpc-{uuid.uuid4().hex[:8]}"}

    async def ship(endpoint: str, app: str) -> tuple[Outcome, Shipper]:
        request = syslog_batch(app, 3)
        # A record the server cannot map: refused in partialSuccess, the others stored.
        request.resource_logs[0].scope_logs[0].log_records.append(LogRecord(severity_number=99))  # type: ignore[arg-type]
        async with Shipper(config(endpoint, writer), backoff=TINY_BACKOFF) as shipper:
            return await shipper.ship(request.SerializeToString()), shipper

    async def refused(endpoint: str, token: str, payload: bytes) -> Outcome:
        async with Shipper(config(endpoint, token, compression="none"), backoff=TINY_BACKOFF) as shipper:
            outcome = await shipper.ship(payload)
            assert shipper.counters.failed_permanent == 1
            assert shipper.counters.retried == 0
            return outcome

    async def run() -> list[tuple[Outcome, Shipper] | Outcome]:
        payload = syslog_batch("never-stored", 1).SerializeToString()
        return await asyncio.gather(
            ship(http, apps["http"]),
            ship(grpc_endpoint, apps["grpc"]),
            refused(http, UNKNOWN_TOKEN, payload),
            refused(grpc_endpoint, UNKNOWN_TOKEN, payload),
            refused(http, reader, payload),
            refused(grpc_endpoint, reader, payload),
            refused(http, writer, b"\xff\xff not protobuf"),
        )

    with caplog.at_level(logging.DEBUG):
        results = asyncio.run(run())
    for shipped in results[:2]:
        assert isinstance(shipped, tuple)
        outcome, shipper = shipped
        assert (outcome.result, outcome.records, outcome.rejected, outcome.attempts) == (Result.SUCCESS, 4, 1, 1)
        assert "severityNumber 99" in outcome.message
        counters = shipper.counters
        assert (counters.shipped_batches, counters.shipped_records, counters.rejected_by_server) == (1, 3, 1)
    statuses = [r.message.split(":")[0] for r in results[2:] if isinstance(r, Outcome)]
    assert statuses == [
        "OTLP/HTTP 401",
        "OTLP/gRPC UNAUTHENTICATED",
        "OTLP/HTTP 403",
        "OTLP/gRPC PERMISSION_DENIED",
        "OTLP/HTTP 400",
    ]
    assert all(isinstance(r, Outcome) and r.result is Result.PERMANENT for r in results[2:])
    assert "failed permanently" in caplog.text
    for secret in (writer, reader, UNKNOWN_TOKEN, "shipped line"):
        assert secret not in caplog.text

    for transport, app in apps.items():
        records = search(owner, f"service:{app}")
        assert sorted(str(r["message"]) for r in records) == [f"shipped line {i}" for i in range(3)], transport
        first = next(r for r in records if r["message"] == "shipped line 0")
        assert first["level"] == "error"
        assert first["severityText"] == "err"
        assert first["resource"] == {"host.name": "web-0", "service.name": app}
        assert first["attributes"]["observe.source"] == "edge"  # type: ignore[index]
        assert first["attributes"]["syslog.msgid"] == "ID0"  # type: ignore[index]


class ScriptedLogsService(logs_service_pb2_grpc.LogsServiceServicer):
    """Answers each Export with the next scripted status (None: OK), recording arrival time and metadata."""

    def __init__(self, script: list[tuple[grpc.StatusCode, float | None] | None]) -> None:
        self.script = script
        self.calls: list[tuple[float, dict[str, str | bytes]]] = []

    async def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.aio.ServicerContext
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        self.calls.append((time.monotonic(), dict(context.invocation_metadata() or ())))
        step = self.script.pop(0) if self.script else None
        if step is None:
            return logs_service_pb2.ExportLogsServiceResponse()
        code, delay = step
        status = status_pb2.Status(code=getattr(code_pb2, code.name), message="scripted")
        if delay is not None:
            retry = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=int(delay), nanos=0))
            status.details.add().Pack(retry)
        await context.abort(
            code, "scripted", trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),)
        )
        raise AssertionError("abort returns no more")


@asynccontextmanager
async def scripted_grpc(
    script: list[tuple[grpc.StatusCode, float | None] | None],
) -> AsyncIterator[tuple[str, ScriptedLogsService]]:
    service = ScriptedLogsService(script)
    grpc_server = grpc.aio.server()
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(service, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        yield f"grpc://127.0.0.1:{port}", service
    finally:
        await grpc_server.stop(None)


def unavailable_twice(path: str, seen: int) -> Answer:
    return (503, [("Retry-After", "1")]) if seen < 2 else (200, [])


def test_retries_wait_for_the_servers_retry_after_and_retry_info() -> None:
    payload = syslog_batch("retried", 2).SerializeToString()

    async def over_grpc() -> tuple[Outcome, Shipper, ScriptedLogsService]:
        async with scripted_grpc([(grpc.StatusCode.UNAVAILABLE, 1.0), None]) as (endpoint, service):
            shipper = Shipper(config(endpoint, UNKNOWN_TOKEN), backoff=TINY_BACKOFF)
            async with shipper:
                return await shipper.ship(payload), shipper, service

    async def over_http(base: str) -> tuple[Outcome, Shipper]:
        async with Shipper(config(base, UNKNOWN_TOKEN), backoff=TINY_BACKOFF) as shipper:
            return await shipper.ship(payload), shipper

    async def both(base: str) -> tuple[tuple[Outcome, Shipper], tuple[Outcome, Shipper, ScriptedLogsService]]:
        return await asyncio.gather(over_http(base), over_grpc())

    started = time.monotonic()
    with recording_receiver(answer=unavailable_twice) as receiver:
        (http_outcome, http_shipper), (grpc_outcome, grpc_shipper, service) = asyncio.run(both(receiver.url("/otlp")))
    assert time.monotonic() - started < 3.5

    # OTLP/HTTP: 503 + Retry-After: 1 twice, then 200 (an empty, unreadable body: still a success).
    assert (http_outcome.result, http_outcome.attempts, http_outcome.records) == (Result.SUCCESS, 3, 2)
    assert (http_shipper.counters.retried, http_shipper.counters.shipped_batches) == (2, 1)
    seen = receiver.at("/otlp/v1/logs")
    assert len(seen) == 3
    assert all(later.at - earlier.at >= 1.0 for earlier, later in itertools.pairwise(seen))
    first = seen[0]
    assert first.headers["content-type"] == "application/x-protobuf"
    assert first.headers["content-encoding"] == "gzip"
    assert first.headers["authorization"] == f"Bearer {UNKNOWN_TOKEN}"
    assert gzip.decompress(first.body) == payload

    # OTLP/gRPC: UNAVAILABLE with RetryInfo(1 s), then OK.
    assert (grpc_outcome.result, grpc_outcome.attempts) == (Result.SUCCESS, 2)
    assert (grpc_shipper.counters.retried, grpc_shipper.counters.shipped_records) == (1, 2)
    (first_at, metadata), (second_at, _) = service.calls
    assert second_at - first_at >= 1.0
    assert metadata["authorization"] == f"Bearer {UNKNOWN_TOKEN}"


def test_permanent_errors_stop_at_once_and_an_unreachable_server_is_retried_until_stopped() -> None:
    payload = syslog_batch("refused", 1).SerializeToString()

    async def once(endpoint: str, compression: str = "gzip") -> tuple[Outcome, Shipper]:
        async with Shipper(config(endpoint, UNKNOWN_TOKEN, compression=compression), backoff=TINY_BACKOFF) as shipper:
            return await asyncio.wait_for(shipper.ship(payload), 5), shipper  # a retried refusal never ends

    async def until_stopped(endpoint: str) -> tuple[Outcome, Shipper]:
        stop = asyncio.Event()
        async with Shipper(config(endpoint, UNKNOWN_TOKEN), backoff=TINY_BACKOFF, stop=stop) as shipper:
            task = asyncio.create_task(shipper.ship(payload))
            while shipper.counters.retried < 3:  # noqa: ASYNC110 (a counter, no event to wait on)
                await asyncio.sleep(0.01)
            stop.set()
            return await asyncio.wait_for(task, 5), shipper

    async def run(receiver_url: Callable[[str], str]) -> tuple[tuple[Outcome, Shipper], ...]:
        async with (
            scripted_grpc([(grpc.StatusCode.RESOURCE_EXHAUSTED, None)]) as (exhausted, _),
            scripted_grpc([(grpc.StatusCode.INVALID_ARGUMENT, None)]) as (invalid, _),
        ):
            return await asyncio.gather(
                once(receiver_url("/status/400"), compression="none"),
                once(exhausted),
                once(invalid),
                until_stopped(f"http://127.0.0.1:{free_port()}"),
                until_stopped(f"grpc://127.0.0.1:{free_port()}"),
            )

    with recording_receiver() as receiver:
        results = asyncio.run(run(receiver.url))
        assert len(receiver.at("/status/400")) == 1
    for outcome, shipper in results[:3]:
        assert (outcome.result, outcome.attempts) == (Result.PERMANENT, 1), outcome
        assert (shipper.counters.failed_permanent, shipper.counters.failed_permanent_records) == (1, 1)
    for outcome, shipper in results[3:]:
        assert outcome.result is Result.RETRYABLE, outcome
        assert outcome.attempts >= 4
        assert shipper.counters.failed_permanent == 0
        assert shipper.counters.shipped_batches == 0


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after(httpx.Headers({"Retry-After": "7"}), now) == 7.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "Fri, 01 May 2026 12:00:30 GMT"}), now) == 30.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "Fri, 01 May 2026 11:00:00 GMT"}), now) == 0.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"}), now) is None
    assert parse_retry_after(httpx.Headers({}), now) is None
    backoff = Backoff(initial_sec=0.5, maximum_sec=30.0)
    assert all(0.0 <= backoff.delay(attempt) <= min(30.0, 0.5 * 2**attempt) for attempt in range(80))
    assert all(backoff.delay(0, 2.0) >= 2.0 for _ in range(20))
