"""Log records from our JSON API and from OTLP (JSON and protobuf): pure unit tests of core.logs.records / otlp."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from core.logs.otlp import OtlpDecodeError, parse_otlp_json, parse_otlp_protobuf
from core.logs.records import (
    MAX_ATTRIBUTE_KEYS,
    MAX_MESSAGE_BYTES,
    LogBodyError,
    LogRecord,
    approx_size,
    level_of,
    parse_api_body,
)

NOW = datetime(2026, 5, 13, 18, 0, 0, 123456, tzinfo=UTC)
TRACE = "5B8EFFF798038103D269B633813FC60C"
SPAN = "EEE19B7EC3C1B174"

# ---------------------------------------------------------------- severity → level


@pytest.mark.parametrize(
    ("number", "level"),
    [
        *[(0, ""), (1, "trace"), (4, "trace"), (5, "debug"), (8, "debug"), (9, "info"), (12, "info")],
        *[(13, "warn"), (16, "warn"), (17, "error"), (20, "error"), (21, "fatal"), (24, "fatal")],
    ],
)
def test_severity_number_gives_level(number, level):
    assert level_of(number) == level


# ---------------------------------------------------------------- our JSON API


def api(body, content_type="application/json"):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_api_body(raw, content_type, NOW)


def test_api_one_object_full():
    records, rejected = api(
        {
            "timestamp": "2026-05-13T20:00:00.5+02:00",
            "level": "warn",
            "message": "disk almost full",
            "service": "api",
            "attributes": {"host": "a1", "disk": {"used": 0.93, "mounts": ["/", "/var"]}},
            "traceId": TRACE,
            "spanId": SPAN,
        }
    )
    assert rejected == []
    assert records == [
        LogRecord(
            timestamp=datetime(2026, 5, 13, 18, 0, 0, 500000, tzinfo=UTC),
            observed_at=NOW,
            severity_number=13,
            severity_text="warn",
            level="warn",
            message="disk almost full",
            service="api",
            trace_id=TRACE.lower(),
            span_id=SPAN.lower(),
            attributes={"host": "a1", "disk": {"used": 0.93, "mounts": ["/", "/var"]}},
            resource={"service.name": "api"},
        )
    ]


def test_api_defaults_and_level_numbers():
    records, rejected = api([{"message": "m"}] + [{"message": "m", "level": lv} for lv in ("trace", "debug", "info")])
    more, _ = api([{"message": "m", "level": lv} for lv in ("warn", "error", "fatal")])
    assert rejected == []
    first = records[0]
    assert (first.timestamp, first.level, first.severity_number, first.service, first.resource) == (
        NOW,
        "info",
        9,
        None,
        {},
    )
    assert (first.trace_id, first.span_id, first.attributes) == (None, None, {})
    assert [r.severity_number for r in records[1:] + more] == [1, 5, 9, 13, 17, 21]


def test_api_array_keeps_good_records_and_names_bad_ones():
    records, rejected = api(
        [
            {"message": "ok"},
            {"message": "x", "colour": "red"},
            {"level": "info"},
            {"message": 5},
            {"message": ""},
            {"message": "x" * (MAX_MESSAGE_BYTES + 1)},
            {"message": "a\u0000b"},
            {"message": "x", "level": "warning"},
            {"message": "x", "level": 3},
            {"message": "x", "timestamp": "2026-05-13 18:00"},
            {"message": "x", "timestamp": "2026-05-13T18:00:00"},
            {"message": "x", "timestamp": 1747159200},
            {"message": "x", "traceId": "abc"},
            {"message": "x", "spanId": "zzzzzzzzzzzzzzzz"},
            {"message": "x", "traceId": 7},
            {"message": "x", "attributes": [1]},
            {"message": "x", "attributes": {f"k{i}": i for i in range(MAX_ATTRIBUTE_KEYS + 1)}},
            {"message": "x", "attributes": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}},
            {"message": "x", "attributes": {"": 1}},
            {"message": "x", "attributes": {"a": ["ok", "bad\u0000"]}},
            {"message": "x", "service": 5},
            {"message": "x", "service": "s" * 257},
            "not an object",
            {"message": "x", "level": {}},  # unhashable: once a 500
            {"message": "last", "traceId": "0" * 32, "spanId": "0" * 16},
        ]
    )
    assert [r.message for r in records] == ["ok", "last"]
    assert (records[1].trace_id, records[1].span_id) == (None, None)
    got = [(r.index, r.path, r.code) for r in rejected]
    assert got == [
        (1, "colour", "unrecognized_keys"),
        (2, "message", "required"),
        (3, "message", "invalid_type"),
        (4, "message", "too_small"),
        (5, "message", "too_big"),
        (6, "message", "invalid_string"),
        (7, "level", "invalid_enum_value"),
        (8, "level", "invalid_type"),
        (9, "timestamp", "invalid_string"),
        (10, "timestamp", "invalid_string"),
        (11, "timestamp", "invalid_type"),
        (12, "traceId", "invalid_string"),
        (13, "spanId", "invalid_string"),
        (14, "traceId", "invalid_type"),
        (15, "attributes", "invalid_type"),
        (16, "attributes", "too_big"),
        (17, "attributes.a.b.c.d.e.f", "too_big"),
        (18, "attributes.", "invalid_string"),
        (19, "attributes.a[1]", "invalid_string"),
        (20, "service", "invalid_type"),
        (21, "service", "too_big"),
        (22, "", "invalid_type"),
        (23, "level", "invalid_type"),
    ]
    assert rejected[6].message == "Expected one of trace, debug, info, warn, error, fatal"
    assert rejected[11].violation().path == "[12].traceId"
    assert rejected[-2].violation().path == "[22]"


def test_api_multibyte_message_limit_counts_bytes():
    fits = "é" * (MAX_MESSAGE_BYTES // 2)
    records, rejected = api([{"message": fits}, {"message": fits + "é"}])
    assert [len(r.message) for r in records] == [MAX_MESSAGE_BYTES // 2]
    assert [(r.index, r.code) for r in rejected] == [(1, "too_big")]


def test_api_duplicate_keys_reject_that_record():
    raw = b'[{"message": "a"}, {"message": "b", "message": "c"}, {"message": "d", "attributes": {"k": 1, "k": 2}}]'
    records, rejected = api(raw)
    assert [r.message for r in records] == ["a"]
    assert [(r.index, r.path, r.code) for r in rejected] == [(1, "message", "custom"), (2, "attributes.k", "custom")]


def test_api_colon_inside_strings_is_no_duplicate():
    records, rejected = api(b'{"message": "a: b: c", "attributes": {"url": "http://x:80/"}}')
    assert rejected == []
    assert records[0].attributes == {"url": "http://x:80/"}


def test_api_ndjson_per_line_rejections():
    raw = b'{"message": "one"}\n\n{"message": "two", "level": "error"}\n{"message": \n[1]\n{"message": "five"}\r\n'
    records, rejected = api(raw, "application/x-ndjson")
    assert [(r.message, r.level) for r in records] == [("one", "info"), ("two", "error"), ("five", "info")]
    assert [(r.index, r.code) for r in rejected] == [(3, "invalid_type"), (4, "invalid_type")]


def test_api_ndjson_labelled_json_is_read_as_ndjson():
    records, rejected = api(b'{"message": "one"}\n{"message": "two"}\n', "application/json; charset=utf-8")
    assert ([r.message for r in records], rejected) == (["one", "two"], [])


@pytest.mark.parametrize("raw", [b'{"message": ', b"null", b'"text"', b"42", b""])
def test_api_malformed_document_raises(raw):
    with pytest.raises(LogBodyError) as caught:
        api(raw)
    error = caught.value.to_error()
    assert error.http_status == 400
    assert error.fields[0].code == "invalid_type"


def test_api_other_media_type_is_415():
    with pytest.raises(LogBodyError) as caught:
        api(b"hello", "text/plain")
    assert caught.value.to_error().http_status == 415


def test_api_empty_array_is_nothing():
    assert api([]) == ([], [])


def test_approx_size_counts_text_and_json():
    record = api({"message": "héllo", "service": "api", "attributes": {"k": "v"}})[0][0]
    expected = 64 + len("héllo".encode()) + len(b'{"k":"v"}') + len(b'{"service.name":"api"}') + len("info") + 3
    assert approx_size(record) == expected


# ---------------------------------------------------------------- OTLP

T1 = 1_747_159_200_123_456_789  # 2025-05-13T18:00:00.123456789Z
T1_AT = datetime(2025, 5, 13, 18, 0, 0, 123456, tzinfo=UTC)
OBSERVED = 1_747_159_201_000_000_000
OBSERVED_AT = datetime(2025, 5, 13, 18, 0, 1, tzinfo=UTC)


def kv(key, value):
    return {"key": key, "value": value}


# Shaped like what the OpenTelemetry JS SDK's JSON exporter sends, by the OTLP JSON encoding rules:
# int64 as strings and numbers, enums as integers (and one as its name), hex ids, fields we do not know.
OTLP_JSON = {
    "resourceLogs": [
        {
            "resource": {
                "attributes": [
                    kv("service.name", {"stringValue": "checkout"}),
                    kv("telemetry.sdk.language", {"stringValue": "nodejs"}),
                    kv("process.pid", {"intValue": 4242}),
                ],
                "droppedAttributesCount": 0,
                "futureResourceField": {"x": 1},
            },
            "scopeLogs": [
                {
                    "scope": {"name": "checkout-logger", "version": "1.2.0", "attributes": []},
                    "logRecords": [
                        {
                            "timeUnixNano": str(T1),
                            "observedTimeUnixNano": OBSERVED,
                            "severityNumber": 17,
                            "severityText": "ERROR",
                            "body": {"stringValue": "payment failed"},
                            "attributes": [
                                kv("http.status_code", {"intValue": "502"}),
                                kv("retry", {"boolValue": True}),
                                kv("latency", {"doubleValue": 12.5}),
                                kv("tags", {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 2}]}}),
                                kv("user", {"kvlistValue": {"values": [kv("id", {"stringValue": "u1"})]}}),
                                kv("raw", {"bytesValue": base64.b64encode(b"\x00\x01\xff").decode()}),
                                kv("nothing", {}),
                            ],
                            "droppedAttributesCount": 1,
                            "flags": 1,
                            "traceId": TRACE,
                            "spanId": SPAN,
                            "eventName": "",
                            "someFutureField": [1, 2, 3],
                        },
                        {
                            "observedTimeUnixNano": str(OBSERVED),
                            "severityNumber": "SEVERITY_NUMBER_INFO2",
                            "body": {"kvlistValue": {"values": [kv("event", {"stringValue": "login"})]}},
                            "traceId": "",
                            "spanId": "",
                        },
                        {
                            "timeUnixNano": "0",
                            "body": {"arrayValue": {"values": [{"intValue": "1"}, {"doubleValue": 2.5}]}},
                            "traceId": "0" * 32,
                            "spanId": "0" * 16,
                        },
                    ],
                    "schemaUrl": "https://opentelemetry.io/schemas/1.24.0",
                }
            ],
        },
        {"resource": {}, "scopeLogs": [{"logRecords": [{"severityNumber": 0}]}]},
    ]
}

EXPECTED = [
    LogRecord(
        timestamp=T1_AT,
        observed_at=OBSERVED_AT,
        severity_number=17,
        severity_text="ERROR",
        level="error",
        message="payment failed",
        service="checkout",
        trace_id=TRACE.lower(),
        span_id=SPAN.lower(),
        attributes={
            "http.status_code": 502,
            "retry": True,
            "latency": 12.5,
            "tags": ["a", 2],
            "user": {"id": "u1"},
            "raw": "AAH/",
            "nothing": None,
        },
        resource={"service.name": "checkout", "telemetry.sdk.language": "nodejs", "process.pid": 4242},
        scope_name="checkout-logger",
        scope_version="1.2.0",
        dropped_attributes_count=1,
    ),
    LogRecord(
        timestamp=OBSERVED_AT,
        observed_at=OBSERVED_AT,
        severity_number=10,
        severity_text="",
        level="info",
        message='{"event":"login"}',
        service="checkout",
        trace_id=None,
        span_id=None,
        attributes={},
        resource={"service.name": "checkout", "telemetry.sdk.language": "nodejs", "process.pid": 4242},
        scope_name="checkout-logger",
        scope_version="1.2.0",
    ),
    LogRecord(
        timestamp=NOW,
        observed_at=NOW,
        severity_number=0,
        severity_text="",
        level="",
        message="[1,2.5]",
        service="checkout",
        trace_id=None,
        span_id=None,
        attributes={},
        resource={"service.name": "checkout", "telemetry.sdk.language": "nodejs", "process.pid": 4242},
        scope_name="checkout-logger",
        scope_version="1.2.0",
    ),
    LogRecord(
        timestamp=NOW,
        observed_at=NOW,
        severity_number=0,
        severity_text="",
        level="",
        message="",
        service=None,
        trace_id=None,
        span_id=None,
        attributes={},
        resource={},
    ),
]


def anyvalue(**kw):
    return common_pb2.AnyValue(**kw)


def pb_kv(key, value):
    return common_pb2.KeyValue(key=key, value=value)


def otlp_protobuf():
    """The same request as OTLP_JSON, built with the official messages."""
    resource = resource_pb2.Resource(
        attributes=[
            pb_kv("service.name", anyvalue(string_value="checkout")),
            pb_kv("telemetry.sdk.language", anyvalue(string_value="nodejs")),
            pb_kv("process.pid", anyvalue(int_value=4242)),
        ]
    )
    first = logs_pb2.LogRecord(
        time_unix_nano=T1,
        observed_time_unix_nano=OBSERVED,
        severity_number=logs_pb2.SEVERITY_NUMBER_ERROR,
        severity_text="ERROR",
        body=anyvalue(string_value="payment failed"),
        attributes=[
            pb_kv("http.status_code", anyvalue(int_value=502)),
            pb_kv("retry", anyvalue(bool_value=True)),
            pb_kv("latency", anyvalue(double_value=12.5)),
            pb_kv(
                "tags",
                anyvalue(array_value=common_pb2.ArrayValue(values=[anyvalue(string_value="a"), anyvalue(int_value=2)])),
            ),
            pb_kv(
                "user",
                anyvalue(kvlist_value=common_pb2.KeyValueList(values=[pb_kv("id", anyvalue(string_value="u1"))])),
            ),
            pb_kv("raw", anyvalue(bytes_value=b"\x00\x01\xff")),
            pb_kv("nothing", anyvalue()),
        ],
        dropped_attributes_count=1,
        flags=1,
        trace_id=bytes.fromhex(TRACE),
        span_id=bytes.fromhex(SPAN),
    )
    second = logs_pb2.LogRecord(
        observed_time_unix_nano=OBSERVED,
        severity_number=logs_pb2.SEVERITY_NUMBER_INFO2,
        body=anyvalue(kvlist_value=common_pb2.KeyValueList(values=[pb_kv("event", anyvalue(string_value="login"))])),
    )
    third = logs_pb2.LogRecord(
        body=anyvalue(array_value=common_pb2.ArrayValue(values=[anyvalue(int_value=1), anyvalue(double_value=2.5)])),
        trace_id=bytes(16),
        span_id=bytes(8),
    )
    scope = common_pb2.InstrumentationScope(name="checkout-logger", version="1.2.0")
    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource,
                scope_logs=[
                    logs_pb2.ScopeLogs(scope=scope, log_records=[first, second, third], schema_url="https://x/1.24.0")
                ],
            ),
            logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=[logs_pb2.LogRecord()])]),
        ]
    )
    return request.SerializeToString()


def test_otlp_json_sdk_shaped_payload():
    records, rejected, error = parse_otlp_json(orjson.dumps(OTLP_JSON), NOW)
    assert (rejected, error) == (0, "")
    assert records == EXPECTED


def test_otlp_protobuf_gives_the_same_records():
    records, rejected, error = parse_otlp_protobuf(otlp_protobuf(), NOW)
    assert (rejected, error) == (0, "")
    assert records == EXPECTED


def test_otlp_json_bad_records_are_counted_not_fatal():
    payload = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"body": {"stringValue": "kept"}},
                            {"traceId": "not-hex-not-hex-not-hex-not-hex!"},
                            {"spanId": "abc"},
                            {"traceId": base64.b64encode(bytes.fromhex(TRACE)).decode()},
                            {"severityNumber": 25},
                            {"severityNumber": "LOUD"},
                            {"timeUnixNano": "soon"},
                            {"attributes": [{"value": {"stringValue": "no key"}}]},
                            {"body": {"intValue": "1.5"}},
                            "not an object",
                        ]
                    },
                    {"scope": {"name": 7}, "logRecords": [{}, {}]},
                ]
            },
            {"resource": {"attributes": "nope"}, "scopeLogs": [{"logRecords": [{}, {}, {}]}]},
        ]
    }
    records, rejected, error = parse_otlp_json(json.dumps(payload).encode(), NOW)
    assert [r.message for r in records] == ["kept"]
    assert rejected == 9 + 2 + 3
    assert error == "14 log records rejected; first: traceId: Expected 32 hexadecimal characters"


def test_otlp_protobuf_wrong_id_length_is_rejected():
    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        log_records=[
                            logs_pb2.LogRecord(trace_id=b"\x01" * 15),
                            logs_pb2.LogRecord(span_id=b"\x01" * 8, severity_number=30),  # type: ignore[arg-type]
                            logs_pb2.LogRecord(span_id=b"\x01" * 8),
                        ]
                    )
                ]
            )
        ]
    )
    records, rejected, error = parse_otlp_protobuf(request.SerializeToString(), NOW)
    assert [r.span_id for r in records] == ["0101010101010101"]
    assert rejected == 2
    assert "traceId must be 16 bytes" in error


def test_otlp_special_doubles_and_nul():
    payload = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "body": {"stringValue": "a\u0000b"},
                                "attributes": [
                                    kv("nan", {"doubleValue": "NaN"}),
                                    kv("inf", {"doubleValue": "-Infinity"}),
                                    kv("str", {"doubleValue": "1.5"}),
                                ],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    records, _, _ = parse_otlp_json(orjson.dumps(payload), NOW)
    assert records[0].message == "a\ufffdb"
    assert records[0].attributes == {"nan": "NaN", "inf": "-Infinity", "str": 1.5}


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"resourceLogs": {}}', b'{"resourceLogs": [1]}'])
def test_otlp_json_undecodable(raw):
    with pytest.raises(OtlpDecodeError):
        parse_otlp_json(raw, NOW)


def test_otlp_protobuf_undecodable():
    with pytest.raises(OtlpDecodeError):
        parse_otlp_protobuf(b"\xff\xff\xff", NOW)


def test_otlp_empty_requests():
    assert parse_otlp_json(b"{}", NOW) == ([], 0, "")
    assert parse_otlp_protobuf(b"", NOW) == ([], 0, "")
