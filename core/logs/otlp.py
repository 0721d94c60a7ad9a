"""OTLP logs (``ExportLogsServiceRequest``) in JSON and protobuf, to :class:`LogRecord` values.

Both encodings end in :func:`_record`, so a record means the same whichever
way it came. The JSON side is read with orjson and mapped by hand, not with
``google.protobuf.json_format``: that decodes the hex ``traceId``/``spanId``
of OTLP JSON as base64 (wrong bytes, silently) and is ~20 times slower. The
protobuf side uses the official messages of ``opentelemetry-proto``.

OTLP JSON rules kept here: unknown fields are ignored; enums are integers or
their names; int64/uint64 values are JSON numbers or decimal strings; ids are
hex (not base64); ``bytesValue`` is base64 (kept as that string).

AnyValue → JSON value: string, bool, int, double (NaN and the infinities as
the strings "NaN", "Infinity", "-Infinity"), array → list, kvlist → object
(the last of repeated keys wins), bytes → base64 string, empty → null.
U+0000 in strings is replaced by U+FFFD (no store keeps it; OTLP cannot be
told about one field).

A record that cannot be mapped (bad id, severity out of range, wrong JSON
type) is rejected and counted, as OTLP's ``partialSuccess`` reports; an
undecodable body, or one whose arrays are not arrays, raises :class:`OtlpDecodeError` (400 on HTTP,
INVALID_ARGUMENT on gRPC).
"""

from __future__ import annotations

import base64
import contextlib
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from core.logs.records import (
    MAX_MESSAGE_BYTES,
    MAX_RECORDS_PER_REQUEST,
    LogRecord,
    TooManyRecordsError,
    Window,
    hex_id,
    level_of,
)
from core.rpc.jsonkeys import may_repeat_keys, parse_with_repeats, repeated_key_paths

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_NANOS = 2**64 - 1
_MAX_UINT32 = 2**32 - 1
_INT64 = range(-(2**63), 2**64)  # int64 and uint64 (OTLP's fixed64 times) alike
_MAX_DEPTH = 32  # kvlist/array nesting in an AnyValue (protobuf itself stops at 100)
_SEVERITY_NAMES: dict[str, int] = {name: int(number) for name, number in logs_pb2.SeverityNumber.items()}


class OtlpDecodeError(ValueError):
    """The request as a whole is not an ExportLogsServiceRequest."""


class _InvalidRecordError(Exception):
    """One record (or every record of a resource or scope) cannot be mapped."""


# ---------------------------------------------------------------- shared


def _record(
    time_ns: int,
    observed_ns: int,
    severity: int,
    severity_text: str,
    body: Any,
    attributes: dict[str, Any],
    trace_id: str | None,
    span_id: str | None,
    dropped: int,
    resource: dict[str, Any],
    scope: tuple[str, str],
    now: datetime,
    window: Window | None = None,
) -> LogRecord:
    if not 0 <= severity <= 24:
        raise _InvalidRecordError(f"severityNumber {severity} is not 0-24")
    if not (0 <= time_ns <= _MAX_NANOS and 0 <= observed_ns <= _MAX_NANOS):
        raise _InvalidRecordError("timeUnixNano out of range")
    if not 0 <= dropped <= _MAX_UINT32:
        raise _InvalidRecordError("droppedAttributesCount out of range")
    if isinstance(body, str) and len(body) * 4 > MAX_MESSAGE_BYTES and len(body.encode()) > MAX_MESSAGE_BYTES:
        raise _InvalidRecordError(f"body is larger than {MAX_MESSAGE_BYTES} bytes")
    observed = _EPOCH + timedelta(microseconds=observed_ns // 1000) if observed_ns else now
    timestamp = _EPOCH + timedelta(microseconds=time_ns // 1000) if time_ns else observed
    if window is not None and (outside := window.refuses(timestamp)):
        raise _InvalidRecordError(outside)
    service = resource.get("service.name")
    return LogRecord(
        timestamp=timestamp,
        observed_at=observed,
        severity_number=severity,
        severity_text=_clean(severity_text),
        level=level_of(severity),
        message=body if isinstance(body, str) else "" if body is None else _json_body(body),
        service=service if isinstance(service, str) and service else None,
        trace_id=trace_id,
        span_id=span_id,
        attributes=attributes,
        resource=resource,
        scope_name=scope[0],
        scope_version=scope[1],
        dropped_attributes_count=dropped,
    )


def _json_body(body: Any) -> str:
    text = orjson.dumps(body).decode()
    if len(text) * 4 > MAX_MESSAGE_BYTES and len(text.encode()) > MAX_MESSAGE_BYTES:
        raise _InvalidRecordError(f"body is larger than {MAX_MESSAGE_BYTES} bytes")
    return text


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _double(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"


def _summary(rejected: int, first_error: str) -> str:
    return f"{rejected} log records rejected; first: {first_error}" if rejected else ""


# ---------------------------------------------------------------- OTLP JSON


def parse_otlp_json(raw: bytes, now: datetime, window: Window | None = None) -> tuple[list[LogRecord], int, str]:
    """OTLP/JSON → (records, rejected count, error message for ``partialSuccess``; "" if none rejected)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise OtlpDecodeError(f"Malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise OtlpDecodeError("Expected an ExportLogsServiceRequest object")
    if may_repeat_keys(raw, [data]):  # unknown keys are ignored (OTLP), repeated ones are not (CONTRACT.md)
        repeated = repeated_key_paths(parse_with_repeats(raw))
        if repeated:
            raise OtlpDecodeError(f"Duplicate key: {repeated[0]}")
    count = _json_count(data)
    if count > MAX_RECORDS_PER_REQUEST:
        raise TooManyRecordsError(count)
    now = now.astimezone(UTC)
    records: list[LogRecord] = []
    rejected = 0
    first_error = ""
    for resource_logs in _list(data.get("resourceLogs"), "resourceLogs"):
        if not isinstance(resource_logs, dict):
            raise OtlpDecodeError("resourceLogs[] must be objects")
        scope_logs = _list(resource_logs.get("scopeLogs"), "scopeLogs")
        try:
            resource_msg = resource_logs.get("resource") or {}
            if not isinstance(resource_msg, dict):
                raise _InvalidRecordError("resource must be an object")
            resource = _json_attributes(resource_msg.get("attributes"))
        except _InvalidRecordError as exc:
            count = sum(len(s.get("logRecords") or []) if isinstance(s, dict) else 1 for s in scope_logs)
            rejected, first_error = rejected + count, first_error or str(exc)
            continue
        for one_scope in scope_logs:
            if not isinstance(one_scope, dict):
                raise OtlpDecodeError("scopeLogs[] must be objects")
            log_records = _list(one_scope.get("logRecords"), "logRecords")
            try:
                scope = _json_scope(one_scope.get("scope"))
            except _InvalidRecordError as exc:
                rejected, first_error = rejected + len(log_records), first_error or str(exc)
                continue
            for item in log_records:
                try:
                    records.append(_json_record(item, resource, scope, now, window))
                except _InvalidRecordError as exc:
                    rejected, first_error = rejected + 1, first_error or str(exc)
    return records, rejected, _summary(rejected, first_error)


def _json_count(data: dict[str, Any]) -> int:
    """How many logRecords a request holds (what is malformed counts nothing: the mapping refuses it)."""
    count = 0
    for resource in data.get("resourceLogs") or ():
        for scope in (resource.get("scopeLogs") or ()) if isinstance(resource, dict) else ():
            records = scope.get("logRecords") if isinstance(scope, dict) else None
            count += len(records) if isinstance(records, list) else 0
    return count


def _list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"{name} must be an array")
    return value


def _json_record(
    item: Any, resource: dict[str, Any], scope: tuple[str, str], now: datetime, window: Window | None
) -> LogRecord:
    if not isinstance(item, dict):
        raise _InvalidRecordError("logRecords[] must be objects")
    get = item.get
    severity = get("severityNumber", 0)
    if type(severity) is not int:
        if isinstance(severity, str) and severity in _SEVERITY_NAMES:
            severity = _SEVERITY_NAMES[severity]
        else:
            severity = _int(severity, "severityNumber")
    text = get("severityText") or ""
    if not isinstance(text, str):
        raise _InvalidRecordError("severityText must be a string")
    body = get("body")
    return _record(
        _int(get("timeUnixNano", 0), "timeUnixNano"),
        _int(get("observedTimeUnixNano", 0), "observedTimeUnixNano"),
        severity,
        text,
        None if body is None else _json_any(body),
        _json_attributes(get("attributes")),
        _json_id(get("traceId"), "traceId", 32),
        _json_id(get("spanId"), "spanId", 16),
        _int(get("droppedAttributesCount", 0), "droppedAttributesCount"),
        resource,
        scope,
        now,
        window,
    )


def _int(value: Any, name: str) -> int:
    """An int64 of OTLP JSON: a number or a decimal string."""
    number: int | None = None
    if type(value) is int:
        number = value
    elif isinstance(value, str) and len(value) <= 21:
        with contextlib.suppress(ValueError):
            number = int(value, 10)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None:
        raise _InvalidRecordError(f"{name} must be an integer")
    if number not in _INT64:
        raise _InvalidRecordError(f"{name} is out of the 64-bit range")
    return number


def _json_id(value: Any, name: str, length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _InvalidRecordError(f"{name} must be a hex string")
    try:
        return hex_id(value, length)
    except ValueError as exc:
        raise _InvalidRecordError(f"{name}: {exc}") from None


def _json_scope(scope: Any) -> tuple[str, str]:
    if scope is None:
        return "", ""
    if not isinstance(scope, dict):
        raise _InvalidRecordError("scope must be an object")
    name, version = scope.get("name") or "", scope.get("version") or ""
    if not (isinstance(name, str) and isinstance(version, str)):
        raise _InvalidRecordError("scope name and version must be strings")
    return _clean(name), _clean(version)


def _json_attributes(values: Any, depth: int = 0) -> dict[str, Any]:
    if not values:
        return {}
    if not isinstance(values, list):
        raise _InvalidRecordError("attributes must be an array of key-value objects")
    out: dict[str, Any] = {}
    for kv in values:
        if not isinstance(kv, dict) or not isinstance(key := kv.get("key"), str):
            raise _InvalidRecordError("attributes must be key-value objects with a string key")
        value = kv.get("value")
        out[_clean(key)] = None if value is None else _json_any(value, depth)
    return out


def _json_any(value: Any, depth: int = 0) -> Any:
    """An OTLP JSON AnyValue as a plain JSON value."""
    if not isinstance(value, dict):
        raise _InvalidRecordError("an AnyValue must be an object")
    if depth > _MAX_DEPTH:
        raise _InvalidRecordError(f"values nest more than {_MAX_DEPTH} levels deep")
    if "stringValue" in value:
        text = value["stringValue"]
        if isinstance(text, str):
            return _clean(text)
    elif "intValue" in value:
        return _int(value["intValue"], "intValue")
    elif "boolValue" in value:
        if isinstance(value["boolValue"], bool):
            return value["boolValue"]
    elif "doubleValue" in value:
        number = value["doubleValue"]
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return _double(float(number))
        if number in ("NaN", "Infinity", "-Infinity"):
            return number
        if isinstance(number, str):
            try:
                return _double(float(number))
            except ValueError:
                pass
    elif "kvlistValue" in value:
        kvlist = value["kvlistValue"]
        if isinstance(kvlist, dict):
            return _json_attributes(kvlist.get("values"), depth + 1)
    elif "arrayValue" in value:
        array = value["arrayValue"]
        if isinstance(array, dict):
            items = array.get("values") or []
            if isinstance(items, list):
                return [_json_any(item, depth + 1) for item in items]
    elif "bytesValue" in value:
        data = value["bytesValue"]
        if isinstance(data, str):
            return data
    else:
        return None  # an empty AnyValue (or only fields this version does not know)
    raise _InvalidRecordError(f"malformed AnyValue {next(iter(value))}")


# ---------------------------------------------------------------- OTLP protobuf


def parse_otlp_protobuf(raw: bytes, now: datetime, window: Window | None = None) -> tuple[list[LogRecord], int, str]:
    """OTLP protobuf (HTTP body) → (records, rejected count, error message; "" if none rejected)."""
    request = logs_service_pb2.ExportLogsServiceRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError as exc:
        raise OtlpDecodeError(f"Undecodable protobuf: {exc}") from None
    return map_otlp_request(request, now, window)


def map_otlp_request(
    request: logs_service_pb2.ExportLogsServiceRequest, now: datetime, window: Window | None = None
) -> tuple[list[LogRecord], int, str]:
    """An already decoded request (the gRPC service gets one) → (records, rejected, error message)."""
    count = sum(len(scope.log_records) for resource in request.resource_logs for scope in resource.scope_logs)
    if count > MAX_RECORDS_PER_REQUEST:
        raise TooManyRecordsError(count)
    now = now.astimezone(UTC)
    records: list[LogRecord] = []
    rejected = 0
    first_error = ""
    for resource_logs in request.resource_logs:
        resource = _pb_attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope = (_clean(scope_logs.scope.name), _clean(scope_logs.scope.version))
            for item in scope_logs.log_records:
                try:
                    records.append(
                        _record(
                            item.time_unix_nano,
                            item.observed_time_unix_nano,
                            item.severity_number,
                            item.severity_text,
                            _pb_any(item.body) if item.HasField("body") else None,
                            _pb_attributes(item.attributes),
                            _pb_id(item.trace_id, "traceId", 16),
                            _pb_id(item.span_id, "spanId", 8),
                            item.dropped_attributes_count,
                            resource,
                            scope,
                            now,
                            window,
                        )
                    )
                except _InvalidRecordError as exc:
                    rejected, first_error = rejected + 1, first_error or str(exc)
    return records, rejected, _summary(rejected, first_error)


def _pb_id(data: bytes, name: str, length: int) -> str | None:
    if not data:
        return None
    if len(data) != length:
        raise _InvalidRecordError(f"{name} must be {length} bytes")
    text = data.hex()
    return None if not data.strip(b"\x00") else text


def _pb_attributes(values: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in values:
        key, value = kv.key, kv.value
        if "\x00" in key:
            key = _clean(key)
        if value.WhichOneof("value") == "string_value":  # the common case, inlined
            text = value.string_value
            out[key] = text if "\x00" not in text else _clean(text)
        else:
            out[key] = _pb_any(value)
    return out


def _pb_any(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return _clean(value.string_value)
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return _double(value.double_value)
    if kind == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values)
    if kind == "array_value":
        return [_pb_any(item) for item in value.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None
