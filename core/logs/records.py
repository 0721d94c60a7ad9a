"""The one shape of a log record, and our own JSON API's ingest body.

Every ingest path (``POST /api/v1/logs`` here, OTLP/HTTP and OTLP/gRPC in
:mod:`core.logs.otlp`) turns what it received into :class:`LogRecord` values;
the stores write those (the writer adds the org). Times are UTC datetimes to
the microsecond (OTLP nanoseconds are truncated).

Our API body (``parse_api_body``) is strict like the rest of our REST API: an
unknown key, a bad level or id rejects that record (not the request), named by
a :class:`Rejection` in the ``fields[]`` vocabulary. A body that is not JSON at
all (or NDJSON whose every line is broken beyond a record) raises
:class:`LogBodyError`, which the route answers with 400.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from core.errors import ErrorCode, FieldViolation, ObserveError, validation_failed
from core.logs.query import LEVELS
from core.rpc.jsonkeys import may_repeat_keys, parse_with_repeats, repeated_key_paths

# ---------------------------------------------------------------- the record

_LEVEL_OF: tuple[str, ...] = ("", *(name for name, (low, high) in LEVELS.items() for _ in range(low, high + 1)))
# The severity number a level name stands for in our API: the first of its OTLP range (1/5/9/13/17/21).
SEVERITY_OF_LEVEL: dict[str, int] = {name: low for name, (low, _high) in LEVELS.items()}


def level_of(severity_number: int) -> str:
    """The level name of an OTLP severity number: 1-4 trace … 21-24 fatal; "" for 0 (unspecified)."""
    return _LEVEL_OF[severity_number]


@dataclass(slots=True)
class LogRecord:
    """One log record as every ingest path produces it (without the org: the writer adds it).

    Treated as immutable, but not ``frozen``: a frozen dataclass's ``__init__``
    costs 1.6 µs against 0.3 µs, paid for every record ingested."""

    timestamp: datetime  # UTC, microseconds: the record's own time, else the observed time
    observed_at: datetime  # UTC: when a collector (or we) first saw it
    severity_number: int  # 0-24, OTLP
    severity_text: str
    level: str  # level_of(severity_number)
    message: str  # the body: a string body as is, any other body as compact JSON
    service: str | None  # resource attribute service.name
    trace_id: str | None  # 32 lower-case hex digits; None when absent or all zero
    span_id: str | None  # 16 lower-case hex digits; None when absent or all zero
    attributes: dict[str, Any]  # the record's attributes, JSON values
    resource: dict[str, Any]  # the resource's attributes, JSON values
    scope_name: str = ""
    scope_version: str = ""
    dropped_attributes_count: int = 0


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (no float on the way)."""
    return (moment - EPOCH) // _ONE_US


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def record_of(
    timestamp: datetime,
    observed_at: datetime,
    severity: int,
    severity_text: str,
    message: str,
    service: str | None,
    trace_id: str | None,
    span_id: str | None,
    attributes: dict[str, Any],
    resource: dict[str, Any],
    scope_name: str = "",
    scope_version: str = "",
    dropped: int = 0,
) -> LogRecord:
    """A record from its stored fields, its level derived from the severity:
    how the stores and the live tail's wire form read records back."""
    return LogRecord(
        timestamp=timestamp,
        observed_at=observed_at,
        severity_number=severity,
        severity_text=severity_text,
        level=level_of(severity),
        message=message,
        service=service,
        trace_id=trace_id,
        span_id=span_id,
        attributes=attributes,
        resource=resource,
        scope_name=scope_name,
        scope_version=scope_version,
        dropped_attributes_count=dropped,
    )


# Bytes counted per record besides its text: two times, severity, ids and row overhead.
FIXED_RECORD_BYTES = 64


def batch_size(records: Iterable[LogRecord]) -> int:
    """``sum(approx_size(r) for r in records)``, with each resource measured
    once: the records of one OTLP ResourceLogs share its attributes dict."""
    sizes: dict[int, int] = {}
    total = 0
    for record in records:
        resource = record.resource
        known = sizes.get(id(resource))
        if known is None:
            known = sizes[id(resource)] = len(orjson.dumps(resource)) if resource else 0
        total += approx_size(record, resource_size=known)
    return total


def approx_size(record: LogRecord, *, resource_size: int | None = None) -> int:
    """A record's size in bytes, as daily and monthly log-byte caps count it.

    The UTF-8 bytes of the message, the compact JSON of the attributes and of
    the resource (stored with every record, so counted with every record), the
    service, scope name and version and severity text, plus
    ``FIXED_RECORD_BYTES`` for the times, numbers and ids. Close to what a
    store writes, cheap to compute, and the same on every ingest path.
    """
    size = FIXED_RECORD_BYTES + len(record.message.encode())
    if record.attributes:
        size += len(orjson.dumps(record.attributes))
    if resource_size is not None:
        size += resource_size
    elif record.resource:
        size += len(orjson.dumps(record.resource))
    text = record.severity_text + record.scope_name + record.scope_version + (record.service or "")
    return size + len(text.encode())


_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_HEX = re.compile(r"[0-9a-fA-F]*")


def hex_id(text: str, length: int) -> str | None:
    """A hex trace (32) or span (16) id, lower-cased; None for "" or all zeros. ValueError if malformed."""
    if not text:
        return None
    if len(text) != length or not _HEX.fullmatch(text):
        raise ValueError(f"Expected {length} hexadecimal characters")
    text = text.lower()
    return None if text == (_ZERO_TRACE if length == 32 else _ZERO_SPAN) else text


# ---------------------------------------------------------------- our JSON API

API_FIELDS = ("timestamp", "level", "message", "service", "attributes", "traceId", "spanId")
MAX_MESSAGE_BYTES = 65_536  # 64 KB of UTF-8
MAX_SERVICE_CHARS = 256
MAX_ATTRIBUTE_KEYS = 128  # keys at every depth together
MAX_ATTRIBUTE_DEPTH = 5  # objects and arrays nested inside ``attributes``
MAX_ATTRIBUTE_KEY_CHARS = 256
_KEY_RULE = f"Keys are 1-{MAX_ATTRIBUTE_KEY_CHARS} characters, without U+0000"
_LEVEL_CHOICES = ", ".join(LEVELS)
_NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one record of a body was not accepted: ``path`` inside the record, ``code`` of fields[]."""

    index: int  # the array index; for NDJSON the 0-based line number (blank lines counted)
    path: str  # e.g. "traceId", "attributes.http.status"; "" for the record itself
    code: str
    message: str

    def violation(self) -> FieldViolation:
        """As a fields[] entry of the whole body: ``[3].traceId``."""
        path = f"[{self.index}].{self.path}" if self.path else f"[{self.index}]"
        return FieldViolation(path, self.code, self.message)


@dataclass(frozen=True, slots=True)
class Window:
    """The times a record may carry: from the retention window's first UTC
    day to a day ahead of now. A record outside is refused (as one rejected
    record): it would be dropped at once, or a clock is far off."""

    first: datetime
    last: datetime

    def refuses(self, timestamp: datetime) -> str:
        """Why ``timestamp`` is refused ("" when it is not)."""
        if timestamp < self.first:
            return f"timestamp is older than the retention period (before {self.first:%Y-%m-%d})"
        if timestamp > self.last:
            return "timestamp is more than a day ahead of the server's clock"
        return ""


MAX_RECORDS_PER_REQUEST = 100_000  # within one millisecond's ids (2^20), and a bound on one request's memory


class TooManyRecordsError(ValueError):
    """A request with more than MAX_RECORDS_PER_REQUEST records: 413, nothing stored."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} log records in one request; at most {MAX_RECORDS_PER_REQUEST}: split the batch")

    def to_error(self) -> ObserveError:
        return ObserveError(ErrorCode.ERROR_CODE_PAYLOAD_TOO_LARGE, str(self))


class LogBodyError(ValueError):
    """The body as a whole cannot be read: the route answers 400 VALIDATION_FAILED (or 415 when ``media``)."""

    def __init__(self, message: str, *, media: bool = False) -> None:
        super().__init__(message)
        self.media = media

    def to_error(self) -> ObserveError:
        if self.media:
            return ObserveError(ErrorCode.ERROR_CODE_UNSUPPORTED_MEDIA_TYPE, str(self))
        return validation_failed([FieldViolation("", "invalid_type", str(self))])


class _Rejected(Exception):  # noqa: N818 (a signal caught in this module, not an error anyone sees)
    def __init__(self, path: str, code: str, message: str) -> None:
        self.path, self.code, self.message = path, code, message


def parse_api_body(
    raw: bytes, content_type: str, now: datetime, window: Window | None = None
) -> tuple[list[LogRecord], list[Rejection]]:
    """``POST /api/v1/logs``: one JSON object, an array of them, or NDJSON (one object a line).

    ``application/json`` holding several lines that are not one document is
    read as NDJSON too (shippers label NDJSON that way). Records without a
    ``timestamp`` get ``now``; ``observedAt`` is ``now`` for all.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _NDJSON_TYPES:
        items = _ndjson(raw)
    elif media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        items = _document(raw)
    else:
        raise LogBodyError("Send application/json or application/x-ndjson", media=True)
    if len(items) > MAX_RECORDS_PER_REQUEST:
        raise TooManyRecordsError(len(items))
    now = now.astimezone(UTC)
    records: list[LogRecord] = []
    rejections: list[Rejection] = []
    for index, item in items:
        if isinstance(item, Rejection):
            rejections.append(item)
            continue
        try:
            record = _api_record(item, now)
            if window is not None and (outside := window.refuses(record.timestamp)):
                code = "too_small" if record.timestamp < window.first else "too_big"
                raise _Rejected("timestamp", code, outside[0].upper() + outside[1:])
            records.append(record)
        except _Rejected as bad:
            rejections.append(Rejection(index, bad.path, bad.code, bad.message))
    return records, rejections


def _document(raw: bytes) -> list[tuple[int, Any]]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        lines = raw.strip().splitlines()
        if len(lines) > 1:
            return _ndjson(raw)
        raise LogBodyError(f"Malformed JSON: {exc}") from None
    if isinstance(data, dict):
        return _checked([(0, data)], raw)
    if isinstance(data, list):
        return _checked(list(enumerate(data)), raw)
    raise LogBodyError("Expected a log record object, an array of them, or NDJSON")


def _ndjson(raw: bytes) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    for number, line in enumerate(raw.split(b"\n")):
        if not line.strip():
            continue
        try:
            out += _checked([(number, orjson.loads(line))], line)
        except orjson.JSONDecodeError as exc:
            out.append((number, Rejection(number, "", "invalid_type", f"Malformed JSON: {exc}")))
    return out


def _checked(items: list[tuple[int, Any]], raw: bytes) -> list[tuple[int, Any]]:
    """Replace records that repeat a key with their rejection (orjson keeps the
    last of repeated keys silently; how they are found: core.rpc.jsonkeys)."""
    if not may_repeat_keys(raw, (item for _, item in items)):
        return items
    again = parse_with_repeats(raw)
    if again is None:
        return items
    trees = [again] if isinstance(again, dict) else again
    out: list[tuple[int, Any]] = []
    for (index, item), tree in zip(items, trees, strict=True):
        repeated = repeated_key_paths(tree)
        out.append((index, Rejection(index, repeated[0], "custom", "Duplicate key") if repeated else item))
    return out


def _api_record(item: Any, now: datetime) -> LogRecord:
    if not isinstance(item, dict):
        raise _Rejected("", "invalid_type", "Expected a log record object")
    unknown = [key for key in item if key not in API_FIELDS]
    if unknown:
        raise _Rejected(unknown[0], "unrecognized_keys", f"Unrecognized key; expected {', '.join(API_FIELDS)}")
    message = item.get("message")
    if message is None:
        raise _Rejected("message", "required", "Required")
    if not isinstance(message, str):
        raise _Rejected("message", "invalid_type", "Expected a string")
    if not message:
        raise _Rejected("message", "too_small", "Must not be empty")
    if len(message) * 4 > MAX_MESSAGE_BYTES and len(message.encode()) > MAX_MESSAGE_BYTES:
        raise _Rejected("message", "too_big", f"At most {MAX_MESSAGE_BYTES} bytes")
    if "\x00" in message:
        raise _Rejected("message", "invalid_string", "Must not contain U+0000")
    level = item.get("level")
    if level is None:
        level = "info"
    elif not isinstance(level, str) or level not in SEVERITY_OF_LEVEL:  # (a dict is unhashable: no `in` first)
        code = "invalid_enum_value" if isinstance(level, str) else "invalid_type"
        raise _Rejected("level", code, f"Expected one of {_LEVEL_CHOICES}")
    service = item.get("service")
    if service is not None:
        if not isinstance(service, str):
            raise _Rejected("service", "invalid_type", "Expected a string")
        if len(service) > MAX_SERVICE_CHARS:
            raise _Rejected("service", "too_big", f"At most {MAX_SERVICE_CHARS} characters")
        if "\x00" in service:
            raise _Rejected("service", "invalid_string", "Must not contain U+0000")
        service = service or None
    attributes = item.get("attributes")
    if attributes is None:
        attributes = {}
    elif not isinstance(attributes, dict):
        raise _Rejected("attributes", "invalid_type", "Expected an object")
    elif attributes:
        _check_attributes(attributes)
    return LogRecord(
        timestamp=_api_time(item.get("timestamp"), now),
        observed_at=now,
        severity_number=SEVERITY_OF_LEVEL[level],
        severity_text=level,
        level=level,
        message=message,
        service=service,
        trace_id=_api_id(item.get("traceId"), "traceId", 32),
        span_id=_api_id(item.get("spanId"), "spanId", 16),
        attributes=attributes,
        resource={"service.name": service} if service else {},
    )


def _api_time(value: Any, now: datetime) -> datetime:
    if value is None:
        return now
    if not isinstance(value, str):
        raise _Rejected("timestamp", "invalid_type", "Expected an RFC 3339 time string")
    try:
        if len(value) < 20 or value[10] not in "Tt":
            raise ValueError
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
        if parsed.tzinfo is None:
            raise ValueError
        try:
            return parsed.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00, 9999-12-31T23:59-01:00: the ends of time
            return datetime.min.replace(tzinfo=UTC) if parsed.year == 1 else datetime.max.replace(tzinfo=UTC)
    except ValueError:
        raise _Rejected("timestamp", "invalid_string", "Expected an RFC 3339 time with an offset") from None


def _api_id(value: Any, path: str, length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Rejected(path, "invalid_type", "Expected a string")
    try:
        return hex_id(value, length)
    except ValueError as exc:
        raise _Rejected(path, "invalid_string", str(exc)) from None


def _check_attributes(attributes: dict[str, Any]) -> None:
    """Key count, nesting depth, key length and U+0000 across all of ``attributes``."""
    keys = 0
    stack: list[tuple[str, Any, int]] = [("attributes", attributes, 0)]
    while stack:
        path, node, depth = stack.pop()
        if isinstance(node, dict):
            keys += len(node)
            if keys > MAX_ATTRIBUTE_KEYS:
                raise _Rejected("attributes", "too_big", f"At most {MAX_ATTRIBUTE_KEYS} keys (at all depths together)")
            for key, value in node.items():
                if not key or len(key) > MAX_ATTRIBUTE_KEY_CHARS or "\x00" in key:
                    raise _Rejected(f"{path}.{key}", "invalid_string", _KEY_RULE)
                if isinstance(value, (dict, list)):
                    stack.append((f"{path}.{key}", value, depth + 1))
                elif isinstance(value, str) and "\x00" in value:
                    raise _Rejected(f"{path}.{key}", "invalid_string", "Must not contain U+0000")
        else:
            for i, value in enumerate(node):
                if isinstance(value, (dict, list)):
                    stack.append((f"{path}[{i}]", value, depth + 1))
                elif isinstance(value, str) and "\x00" in value:
                    raise _Rejected(f"{path}[{i}]", "invalid_string", "Must not contain U+0000")
        if depth > MAX_ATTRIBUTE_DEPTH:
            raise _Rejected(path, "too_big", f"Attributes nest at most {MAX_ATTRIBUTE_DEPTH} levels deep")
