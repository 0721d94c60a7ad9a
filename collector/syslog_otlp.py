"""Syslog messages (`collector.syslog`) as OTLP log records, as the data-model appendix says (the
table in `collector.syslog`'s docstring).

`to_otlp` and `to_log_record` build the messages with the protobuf runtime: the reference, and what
tests read. `encode_request` writes the same request's bytes straight in the wire format
(`collector.otlp_wire`), several times faster: the collector's hot path. A test holds them equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from collector import otlp_wire
from collector.syslog import SCOPE_NAME, SEVERITY_KEYWORDS, SEVERITY_NUMBERS, SyslogMessage, unix_nano


def to_otlp(messages: Iterable[SyslogMessage]) -> ExportLogsServiceRequest:
    """Messages → one export request, one ResourceLogs per distinct resource (host, service, version)."""
    groups: dict[tuple[tuple[str, str], ...], list[LogRecord]] = {}
    for message in messages:
        resource, record = to_log_record(message)
        groups.setdefault(tuple(sorted(resource.items())), []).append(record)
    request = ExportLogsServiceRequest()
    for resource_key, records in groups.items():
        request.resource_logs.append(
            ResourceLogs(
                resource=Resource(attributes=[_key_value(key, value) for key, value in resource_key]),
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name=SCOPE_NAME), log_records=records)],
            )
        )
    return request


_ATTRIBUTES = otlp_wire.AttributeCache()
_SCOPE = otlp_wire.scope(SCOPE_NAME)
_SEVERITY_FIELDS = [
    otlp_wire.SEVERITY_NUMBER + otlp_wire.varint(number) + otlp_wire.field(otlp_wire.SEVERITY_TEXT, keyword.encode())
    for number, keyword in zip(SEVERITY_NUMBERS, SEVERITY_KEYWORDS, strict=True)
]


# Encoded pieces that repeat from message to message (each bounded: cleared past 4,096 entries).
_COMMON: dict[tuple[str, str | None, int | None, int | None], bytes] = {}
_SD_KEYS: dict[tuple[str, str], bytes] = {}


def encode_request(messages: Iterable[SyslogMessage]) -> bytes:
    """`to_otlp` serialized, written straight in the wire format (`collector.otlp_wire`): the same
    bytes, several times faster."""
    groups: dict[tuple[tuple[str, str], ...], list[bytes]] = {}
    received: datetime | None = None
    observed = b""
    for message in messages:
        if message.received_at is not received:
            received = message.received_at
            observed = otlp_wire.OBSERVED_TIME + otlp_wire.FIXED64.pack(unix_nano(received))
        resource, record = _record_fields(message)
        record.append(observed)
        groups.setdefault(tuple(sorted(resource.items())), []).append(b"".join(record))
    return otlp_wire.request(
        [
            (b"".join(otlp_wire.resource_attribute(key, value) for key, value in resource_key), _SCOPE, records)
            for resource_key, records in groups.items()
        ]
    )


def _record_fields(message: SyslogMessage) -> tuple[dict[str, str], list[bytes]]:
    """`to_log_record` as encoded fields, up to (not including) the observed time."""
    cached = _ATTRIBUTES.get
    resource: dict[str, str] = {}
    if message.hostname:
        resource["host.name"] = message.hostname
    if message.app_name:
        resource["service.name"] = message.app_name
    fields: list[bytes] = []
    if nanos := _time_unix_nano(message):  # proto3 omits a zero
        fields.append(otlp_wire.TIME + otlp_wire.FIXED64.pack(nanos))
    if message.severity is not None:
        fields.append(_SEVERITY_FIELDS[message.severity])
    fields.append(otlp_wire.field(otlp_wire.BODY, otlp_wire.string_value(message.message)))
    common = (message.source_tag, message.peer, message.facility, message.version)
    prefix = _COMMON.get(common)
    if prefix is None:
        if len(_COMMON) >= 4096:
            _COMMON.clear()
        prefix = _COMMON[common] = b"".join(
            [
                cached("observe.source", message.source_tag),
                cached("network.peer.address", message.peer) if message.peer else b"",
                cached("syslog.facility", message.facility) if message.facility is not None else b"",
                cached("syslog.version", message.version) if message.version is not None else b"",
            ]
        )
    fields.append(prefix)
    if message.procid is not None:
        fields.append(cached("syslog.procid", message.procid))
    if message.msgid is not None:
        fields.append(cached("syslog.msgid", message.msgid))
    for pair, sent in _structured_data(message, resource):
        key_field = _SD_KEYS.get(pair)
        if key_field is None:
            if len(_SD_KEYS) >= 4096:
                _SD_KEYS.clear()
            key_field = _SD_KEYS[pair] = otlp_wire.field(otlp_wire.KEY, _sd_key(*pair).encode())
        encoded = otlp_wire.any_value(sent[0] if len(sent) == 1 else sent)
        fields.append(otlp_wire.field(otlp_wire.ATTRIBUTE, key_field + otlp_wire.field(otlp_wire.VALUE, encoded)))
    if message.parse_error is not None:
        fields.append(
            otlp_wire.field(otlp_wire.ATTRIBUTE, otlp_wire.key_value("syslog.parse_error", message.parse_error))
        )
    return resource, fields


def _structured_data(message: SyslogMessage, resource: dict[str, str]) -> Iterator[tuple[tuple[str, str], list[str]]]:
    """Each SD param as ((SD-ID, PARAM), its values in order); ``origin swVersion`` goes to the
    resource's ``service.version`` instead."""
    for sd_id, params in message.structured_data:
        values: dict[str, list[str]] = {}
        for name, value in params:
            values.setdefault(name, []).append(value)
        for name, sent in values.items():
            if sd_id == "origin" and name == "swVersion":
                resource["service.version"] = sent[0]
            else:
                yield (sd_id, name), sent


def _sd_key(sd_id: str, name: str) -> str:
    return "client.address" if sd_id == "origin" and name == "ip" else f"syslog.structured_data.{sd_id}.{name}"


def to_log_record(message: SyslogMessage) -> tuple[dict[str, str], LogRecord]:
    """One message → its resource attributes and its log record (the appendix table above)."""
    resource: dict[str, str] = {}
    attributes: list[KeyValue] = [_key_value("observe.source", message.source_tag)]
    if message.hostname:
        resource["host.name"] = message.hostname
    if message.app_name:
        resource["service.name"] = message.app_name
    if message.peer:
        attributes.append(_key_value("network.peer.address", message.peer))
    if message.facility is not None:
        attributes.append(_key_value("syslog.facility", message.facility))
    if message.version is not None:
        attributes.append(_key_value("syslog.version", message.version))
    if message.procid is not None:
        attributes.append(_key_value("syslog.procid", message.procid))
    if message.msgid is not None:
        attributes.append(_key_value("syslog.msgid", message.msgid))
    for pair, sent in _structured_data(message, resource):
        attributes.append(_key_value(_sd_key(*pair), sent))
    if message.parse_error is not None:
        attributes.append(_key_value("syslog.parse_error", message.parse_error))
    record = LogRecord(
        observed_time_unix_nano=unix_nano(message.received_at),
        body=AnyValue(string_value=message.message),
        attributes=attributes,
    )
    record.time_unix_nano = _time_unix_nano(message)
    if message.severity is not None:
        record.severity_number = SEVERITY_NUMBERS[message.severity]
        record.severity_text = SEVERITY_KEYWORDS[message.severity]
    return resource, record


def _key_value(key: str, value: str | int | Sequence[str]) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if len(value) == 1:
        return KeyValue(key=key, value=AnyValue(string_value=value[0]))
    array = ArrayValue(values=[AnyValue(string_value=item) for item in value])
    return KeyValue(key=key, value=AnyValue(array_value=array))


def _time_unix_nano(message: SyslogMessage) -> int:
    if message.time_unix_nano or message.timestamp is None:
        return message.time_unix_nano
    return unix_nano(message.timestamp)
