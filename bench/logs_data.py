"""bench.logs' records: realistic log records, as OTLP protobuf bodies and as LogRecords.

A dozen services (one rare), templated messages with ids, numbers and hosts
in them, levels from debug to error, HTTP attributes, trace and span ids;
one record in RARE_EVERY carries RARE_WORD. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from core.logs.records import LogRecord, level_of

RARE_WORD = "zebracorn"  # one record in RARE_EVERY
RARE_EVERY = 100_000
RARE_SERVICE = "billing-batch"

# ---- realistic records ----------------------------------------------------------------------

SERVICES = ["api", "web", "checkout", "payments", "auth", "search", "inventory", "notifications",
            "gateway", "worker", "scheduler", RARE_SERVICE]  # fmt: skip
SERVICE_WEIGHTS = [25, 20, 10, 8, 8, 7, 6, 5, 5, 4, 1.99, 0.01]
ROUTES = ["/api/v1/users/{n}", "/api/v1/orders/{n}", "/api/v1/cart", "/api/v1/search", "/health", "/login",
          "/api/v1/products/{n}/reviews", "/api/v1/checkout/confirm"]  # fmt: skip
CODES = [200] * 90 + [201] * 3 + [204] * 2 + [404] * 2 + [500, 503, 302]
# (weight, severity number, template): {n} numbers, {ms} durations, {hex} ids, {host}, {svc}, {route}, {code}
TEMPLATES: list[tuple[int, int, str]] = [
    (40, 9, "request completed: {method} {route} status {code} in {ms} ms"),
    (10, 9, "user {n} signed in from 10.{b}.{b}.{b}"),
    (10, 5, "cache miss for key session:{hex}, fetching from redis-{b}"),
    (2, 17, "connection refused by {host}:5432, retrying in {ms} ms"),
    (3, 13, "upstream {svc} timeout after {ms} ms on request {hex}"),
    (2, 17, "payment {n} failed: card declined by issuer bank-{b}"),
    (10, 9, "enqueued job {hex} on queue {svc}-jobs priority {b}"),
    (5, 13, "slow query took {ms} ms: SELECT id, name FROM {svc}_items WHERE id = {n}"),
    (10, 5, "worker {b} heartbeat ok, {b} tasks in flight"),
    (2, 17, "failed to parse payload from {svc}: unexpected token at offset {n}"),
    (6, 5, "GC pause {ms} ms, heap {n} MB"),
]


@dataclass(frozen=True, slots=True)
class Spec:
    """One generated record, before it becomes OTLP or a LogRecord."""

    time_ns: int
    severity: int
    service: str
    message: str
    attributes: dict[str, str | int | float]
    trace_id: bytes
    span_id: bytes


def specs(n: int, first_ns: int, last_ns: int, seed: int) -> Iterator[Spec]:
    """``n`` records with times evenly spread over [first_ns, last_ns], ascending
    (drawn in chunks: one ``choices`` call a column, ~8 us a record here)."""
    rng = random.Random(seed)
    step = (last_ns - first_ns) / max(n - 1, 1)
    methods = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
    bits, rand = rng.getrandbits, rng.random
    for chunk in range(0, n, 10_000):
        k = min(10_000, n - chunk)
        templates = rng.choices(TEMPLATES, [w for w, _, _ in TEMPLATES], k=k)
        services = rng.choices(SERVICES, SERVICE_WEIGHTS, k=k)
        routes = rng.choices(ROUTES, k=k)
        codes = rng.choices(CODES, k=k)
        for j in range(k):
            i = chunk + j
            _, severity, template = templates[j]
            route = routes[j].replace("{n}", str(bits(16) + 1))
            code = codes[j]
            ms = bits(12) + 1
            message = template.format(
                method=methods[bits(16) % 6], route=route, code=code, ms=ms, n=bits(23), b=bits(8),
                hex=f"{bits(48):012x}", host=f"db-{bits(3) + 1}.internal", svc=SERVICES[bits(16) % 10],
            )  # fmt: skip
            if i % RARE_EVERY == RARE_EVERY // 2:
                message += f" ({RARE_WORD})"
            attributes: dict[str, str | int | float] = {"http.method": "GET", "http.route": route,
                                                         "http.status_code": code, "duration_ms": ms / 10}  # fmt: skip
            if rand() < 0.3:
                attributes["user.id"] = f"u{bits(15)}"
            yield Spec(int(first_ns + i * step), severity, services[j], message, attributes,
                       bits(128).to_bytes(16, "big"), bits(64).to_bytes(8, "big"))  # fmt: skip


def resource_of(service: str) -> dict[str, str]:
    return {"service.name": service, "host.name": f"{service}-{hash(service) % 7}", "deployment.environment": "prod"}


def log_record(spec: Spec, now: datetime) -> LogRecord:
    """A spec as the OTLP mapping would store it (core.logs.otlp)."""
    return LogRecord(
        timestamp=datetime.fromtimestamp(spec.time_ns // 1000 / 1e6, UTC),
        observed_at=now,
        severity_number=spec.severity,
        severity_text=level_of(spec.severity).upper(),
        level=level_of(spec.severity),
        message=spec.message,
        service=spec.service,
        trace_id=spec.trace_id.hex(),
        span_id=spec.span_id.hex(),
        attributes=dict(spec.attributes),
        resource=resource_of(spec.service),
        scope_name="bench",
        scope_version="1.0",
    )


def _any(value: str | int | float) -> common_pb2.AnyValue:
    if isinstance(value, str):
        return common_pb2.AnyValue(string_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    return common_pb2.AnyValue(double_value=value)


def otlp_body(batch: list[Spec]) -> bytes:
    """One ExportLogsServiceRequest: a ResourceLogs per service, as a collector sends them."""
    request = logs_service_pb2.ExportLogsServiceRequest()
    by_service: dict[str, list[Spec]] = {}
    for spec in batch:
        by_service.setdefault(spec.service, []).append(spec)
    for service, items in by_service.items():
        rl = request.resource_logs.add()
        attributes = [common_pb2.KeyValue(key=k, value=_any(v)) for k, v in resource_of(service).items()]
        rl.resource.CopyFrom(resource_pb2.Resource(attributes=attributes))
        sl = rl.scope_logs.add()
        sl.scope.name, sl.scope.version = "bench", "1.0"
        sl.log_records.extend(
            logs_pb2.LogRecord(
                time_unix_nano=s.time_ns, observed_time_unix_nano=s.time_ns, severity_number=s.severity,  # type: ignore[arg-type]
                severity_text=level_of(s.severity).upper(), body=common_pb2.AnyValue(string_value=s.message),
                attributes=[common_pb2.KeyValue(key=k, value=_any(v)) for k, v in s.attributes.items()],
                trace_id=s.trace_id, span_id=s.span_id,
            )
            for s in items
        )  # fmt: skip
    return request.SerializeToString()
