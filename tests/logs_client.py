"""Helpers for the logs API tests: ingest and search as a persona, the
caps' own measure of a body, and OTLP requests built with the official
messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2 as otlp_logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from core.logs.records import approx_size, parse_api_body
from tests.conftest import Persona

PROTOBUF = "application/x-protobuf"
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")


def ingest(persona: Persona, body: Any, *, token: str | None = None, **headers: str) -> httpx.Response:
    """POST /api/v1/logs: bytes as they are, anything else as JSON."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers.setdefault("content-type", "application/json")
    with persona.client(token) as c:
        return c.post("/api/v1/logs", content=content, headers=headers)


def search(persona: Persona, q: str = "", *, token: str | None = None, **params: Any) -> httpx.Response:
    with persona.client(token) as c:
        return c.get("/api/v1/logs/search", params={"q": q, **params})


def found(persona: Persona, q: str = "", **params: Any) -> list[dict[str, Any]]:
    """Every record the query finds (all pages), newest first."""
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        r = search(persona, q, limit=1000, **({"cursor": cursor} if cursor else {}), **params)
        assert r.status_code == 200, r.text
        out += r.json()["records"]
        cursor = r.json()["nextCursor"]
        if not cursor:
            return out


def messages(persona: Persona, q: str = "", **params: Any) -> list[str]:
    return [r["message"] for r in found(persona, q, **params)]


def stamp(seconds_ago: float, *, since: datetime | None = None) -> str:
    """An RFC 3339 time ``seconds_ago`` before ``since`` (default now)."""
    return ((since or datetime.now(UTC)) - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds")


def field_paths(r: httpx.Response) -> list[tuple[str, str]]:
    return [(f["path"], f["code"]) for f in r.json()["fields"]]


def size_of(body: list[dict[str, Any]]) -> int:
    """What the caps count for a body (the server's own measure)."""
    records, _ = parse_api_body(orjson.dumps(body), "application/json", datetime.now(UTC))
    return sum(approx_size(r) for r in records)


def used_today(persona: Persona, name: str) -> int:
    with persona.client() as c:
        return int(
            next(t for t in c.get("/api/v1/me/tokens").json()["tokens"] if t["name"] == name)["dailyLogBytesUsedToday"]
        )


def otlp_request(
    bodies: list[str],
    *,
    service: str = "otlp-svc",
    attrs: dict[str, Any] | None = None,
    trace: bytes = b"",
    span: bytes = b"",
) -> logs_service_pb2.ExportLogsServiceRequest:
    records = []
    for n, body in enumerate(bodies):
        record = otlp_logs_pb2.LogRecord(
            time_unix_nano=int((datetime.now(UTC) - timedelta(seconds=1)).timestamp() * 1e9) + n,
            severity_number=otlp_logs_pb2.SEVERITY_NUMBER_WARN,
            severity_text="WARNING",
            body=common_pb2.AnyValue(string_value=body),
            trace_id=trace,
            span_id=span,
        )
        for key, value in (attrs or {}).items():
            any_value = (
                common_pb2.AnyValue(int_value=value)
                if isinstance(value, int)
                else common_pb2.AnyValue(string_value=value)
            )
            record.attributes.append(common_pb2.KeyValue(key=key, value=any_value))
        records.append(record)
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            otlp_logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(
                    attributes=[
                        common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))
                    ]
                ),
                scope_logs=[
                    otlp_logs_pb2.ScopeLogs(
                        scope=common_pb2.InstrumentationScope(name="tests", version="1.0"), log_records=records
                    )
                ],
            )
        ]
    )
