"""The logs API end to end on the session server, every backend: our JSON
ingest (object, array, NDJSON, gzip), per-record rejections, body limits,
search (newest first, cursors, windows, bad queries), scopes and roles, and
OTLP over HTTP (protobuf and JSON, partial success, google.rpc.Status) and
gRPC. Caps and back-pressure: tests/test_log_caps.py."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from tests.conftest import Persona, Server, SmtpSink, make_team, register
from tests.logs_client import PROTOBUF, SPAN, TRACE, field_paths, found, ingest, messages, otlp_request, search, stamp

# ---------------------------------------------------------------- our JSON ingest


def test_an_object_an_array_ndjson_and_gzip_are_stored_with_every_field(owner: Persona) -> None:
    full: dict[str, Any] = {
        "timestamp": stamp(60),
        "level": "error",
        "message": "payment declined for order 17",
        "service": "checkout",
        "attributes": {"http": {"status": 502}, "user": "u-1", "retry": True},
        "traceId": "4BF92F3577B34DA6A3CE929D0E0E4736",
        "spanId": "00f067aa0ba902b7",
    }
    r = ingest(owner, full)
    assert (r.status_code, r.json()) == (202, {"accepted": 1, "rejected": 0, "rejections": []})
    r = ingest(owner, [{"message": "array one"}, {"message": "array two", "level": "debug"}])
    assert r.json()["accepted"] == 2, r.text
    ndjson = b'{"message": "line zero"}\n\n{"message": "line two", "level": "warn"}\n{"message": "line three"}\n'
    r = ingest(owner, ndjson, **{"content-type": "application/x-ndjson"})
    assert r.json() == {"accepted": 3, "rejected": 0, "rejections": []}, r.text
    squeezed = gzip.compress(orjson.dumps([{"message": "gzipped one"}, {"message": "gzipped two"}]))
    r = ingest(owner, squeezed, **{"content-encoding": "gzip"})
    assert r.json()["accepted"] == 2, r.text

    records = found(owner)
    assert sorted(r["message"] for r in records) == sorted(
        [full["message"], "array one", "array two", "line zero", "line two", "line three", "gzipped one", "gzipped two"]
    )
    stored = next(r for r in records if r["service"] == "checkout")
    assert stored["level"] == "error"
    assert stored["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert stored["spanId"] == "00f067aa0ba902b7"
    assert stored["attributes"] == {"http": {"status": 502}, "user": "u-1", "retry": True}
    assert stored["resource"] == {"service.name": "checkout"}
    assert stored["timestamp"] == full["timestamp"].replace("+00:00", "Z")
    assert isinstance(stored["id"], str)
    assert stored["id"]
    levels = {r["message"]: r["level"] for r in records}
    assert (levels["array one"], levels["array two"], levels["line two"]) == ("info", "debug", "warn")
    # The fields are searchable: a field filter, a level filter, a trace id.
    assert messages(owner, "service:checkout level>=error") == [full["message"]]
    assert messages(owner, "traceId:4bf92f3577b34da6a3ce929d0e0e4736 attr.user:u-1 attr.retry:true") == [
        full["message"]
    ]


def test_bad_records_are_rejected_one_by_one_and_a_body_of_only_bad_ones_is_400(owner: Persona) -> None:
    body = [
        {"message": "kept zero"},
        {"message": "loud", "level": "loud"},
        {"message": "extra", "colour": "red"},
        {"message": "kept three", "traceId": "abc"},
        {"message": "kept four"},
    ]
    r = ingest(owner, body)
    assert r.status_code == 202, r.text
    assert (r.json()["accepted"], r.json()["rejected"]) == (2, 3)
    assert [(x["index"], x["path"], x["code"]) for x in r.json()["rejections"]] == [
        (1, "level", "invalid_enum_value"),
        (2, "colour", "unrecognized_keys"),
        (3, "traceId", "invalid_string"),
    ]
    ndjson = b'{"message": "line kept"}\n{"message": \n{"message": "dup", "message": "x"}\n'
    r = ingest(owner, ndjson, **{"content-type": "application/x-ndjson"})
    assert r.status_code == 202, r.text
    assert [(x["index"], x["path"], x["code"]) for x in r.json()["rejections"]] == [
        (1, "", "invalid_type"),
        (2, "message", "custom"),
    ]
    assert sorted(messages(owner)) == ["kept four", "kept zero", "line kept"]

    r = ingest(owner, [{"message": ""}, {"message": "x", "level": 3}])
    assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_FAILED")
    assert field_paths(r) == [("[0].message", "too_small"), ("[1].level", "invalid_type")]
    empty: Any
    for empty in ([], b"null", b"not json", b"{"):
        r = ingest(owner, empty)
        assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_FAILED"), (empty, r.text)
    assert len(found(owner)) == 3


def test_wrong_media_types_encodings_and_bodies_too_large_are_refused(owner: Persona) -> None:
    r = ingest(owner, b"message=hello", **{"content-type": "text/plain"})
    assert (r.status_code, r.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    r = ingest(owner, b'{"message": "x"}', **{"content-encoding": "br"})
    assert (r.status_code, r.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    r = ingest(owner, b"\x1f\x8b not gzip at all", **{"content-encoding": "gzip"})
    assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_FAILED")
    # A small bomb: 20 KB of gzip that would be 21 MiB of JSON.
    bomb = gzip.compress(b'[{"message": "' + b"a" * (21 * 1024 * 1024) + b'"}]', compresslevel=9)
    assert len(bomb) < 100_000
    with owner.client() as c:
        r = c.post(
            "/api/v1/logs", content=bomb, headers={"content-type": "application/json", "content-encoding": "gzip"}
        )
        assert (r.status_code, r.json()["code"]) == (413, "PAYLOAD_TOO_LARGE"), r.text
        # A protobuf request's errors are a google.rpc.Status, from whichever layer refuses it
        # (here the gateway's decompression, before any handler): CONTRACT.md, OTLP.
        r = c.post("/api/v1/otlp/v1/logs", content=bomb, headers={"content-type": PROTOBUF, "content-encoding": "gzip"})
        assert (r.status_code, r.headers["content-type"], r.headers["x-error-code"]) == (
            413, PROTOBUF, "PAYLOAD_TOO_LARGE"
        )  # fmt: skip
        assert "larger than" in status_pb2.Status.FromString(r.content).message
        with owner.client("obs_not-a-token") as anonymous:
            r = anonymous.post("/api/v1/otlp/v1/logs", content=b"", headers={"content-type": PROTOBUF})
        assert (r.status_code, r.headers["content-type"]) == (401, PROTOBUF)
        assert status_pb2.Status.FromString(r.content).code == code_pb2.UNAUTHENTICATED
        r = c.post("/api/v1/otlp/v1/logs", content=b"{}", headers={"content-type": "text/plain"})
        assert (r.status_code, r.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert found(owner) == []


# ---------------------------------------------------------------- search


def test_search_pages_newest_first_within_the_window(owner: Persona) -> None:
    # Five records a second apart (oldest "r1"), and two outside the default hour.
    now = datetime.now(UTC)  # one instant for the records and the window, however slow the requests
    body = [{"message": f"r{n} paged", "timestamp": stamp(10 - n, since=now)} for n in range(1, 6)]
    body += [
        {"message": "two hours old", "timestamp": stamp(7200)},
        {"message": "in a day", "timestamp": stamp(-86000)},
    ]
    assert ingest(owner, body).json()["accepted"] == 7

    pages: list[list[str]] = []
    cursor = ""
    while True:
        r = search(owner, "paged", limit=2, **({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        pages.append([x["message"] for x in r.json()["records"]])
        cursor = r.json()["nextCursor"]
        if not cursor:
            break
    assert pages == [["r5 paged", "r4 paged"], ["r3 paged", "r2 paged"], ["r1 paged"]]

    assert messages(owner) == ["r5 paged", "r4 paged", "r3 paged", "r2 paged", "r1 paged"]
    window = {"from": stamp(8.5, since=now), "to": stamp(6.5, since=now)}
    assert messages(owner, **window) == ["r3 paged", "r2 paged"]
    assert messages(owner, **{"from": stamp(3 * 3600)}) == [
        *[f"r{n} paged" for n in range(5, 0, -1)],
        "two hours old",
    ]
    assert messages(owner, **{"from": stamp(60), "to": stamp(-2 * 86400)})[0] == "in a day"
    assert messages(owner, "-paged", **{"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}) == [
        "in a day",
        "two hours old",
    ]


def test_bad_search_parameters_name_their_field(owner: Persona) -> None:
    ingest(owner, [{"message": "one"}, {"message": "two"}, {"message": "three"}])
    issued = search(owner, limit=1).json()["nextCursor"]
    assert issued
    r = search(owner, "level>=loud")
    assert (r.status_code, field_paths(r)) == (400, [("q", "invalid_string")])
    assert "at position 8" in r.json()["fields"][0]["message"], r.text
    r = search(owner, 'service:"unclosed')
    assert field_paths(r) == [("q", "invalid_string")]
    assert "at position" in r.json()["fields"][0]["message"]
    forged = issued[:-2] + ("AA" if not issued.endswith("AA") else "BB")
    for cursor in ("not-a-cursor", forged, "x" * 64):
        r = search(owner, cursor=cursor)
        assert (r.status_code, field_paths(r)) == (400, [("cursor", "invalid_string")]), (cursor, r.text)
    assert field_paths(search(owner, **{"from": stamp(0), "to": stamp(60)}))[0][0] == "from"
    for limit in (0, 1001):
        assert field_paths(search(owner, limit=limit))[0][0] == "limit"
    assert search(owner, cursor=issued, limit=1).status_code == 200
    r = search(owner, **{"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"})
    assert (r.status_code, len(r.json()["records"])) == (200, 3)


# ---------------------------------------------------------------- who may


def test_scopes_and_roles_decide_who_ingests_and_who_searches(server: Server, smtp_sink: SmtpSink) -> None:
    team = make_team(server, smtp_sink)
    reader = team.owner.mint(name="reader", scopes=["logs:read"])["token"]
    writer = team.owner.mint(name="writer", scopes=["logs:write"])["token"]
    r = ingest(team.owner, {"message": "by the reader"}, token=reader)
    assert (r.status_code, r.json()["code"]) == (403, "PAT_SCOPE_INSUFFICIENT")
    assert ingest(team.owner, {"message": "by the writer"}, token=writer).status_code == 202
    r = search(team.owner, token=writer)
    assert (r.status_code, r.json()["code"]) == (403, "PAT_SCOPE_INSUFFICIENT")
    with team.owner.client(writer) as c:
        r = c.get("/api/v1/logs/tail")
        assert (r.status_code, r.json()["code"]) == (403, "PAT_SCOPE_INSUFFICIENT")
    assert [x["message"] for x in search(team.owner, token=reader).json()["records"]] == ["by the writer"]

    r = ingest(team.viewer, {"message": "by the viewer"})
    assert (r.status_code, r.json()["code"]) == (403, "ROLE_INSUFFICIENT")
    assert ingest(team.member, {"message": "by a member"}).status_code == 202
    assert messages(team.viewer) == ["by a member", "by the writer"]
    outsider = register(server)
    assert messages(outsider) == []
    with httpx.Client(base_url=server.base_url) as anonymous:
        r = anonymous.post("/api/v1/logs", json={"message": "anonymous"})
        assert (r.status_code, r.json()["code"]) == (401, "AUTH_REQUIRED")


# ---------------------------------------------------------------- OTLP


def test_otlp_http_protobuf_and_json_with_partial_success(owner: Persona) -> None:
    good = otlp_request(["proto one", "proto two"], attrs={"http.status": 500, "user": "u-9"}, trace=TRACE, span=SPAN)
    bad = otlp_request(["proto bad id"], trace=b"\x01\x02\x03")
    good.resource_logs.extend(bad.resource_logs)
    with owner.client() as c:
        r = c.post("/api/v1/otlp/v1/logs", content=good.SerializeToString(), headers={"content-type": PROTOBUF})
        assert (r.status_code, r.headers["content-type"]) == (200, PROTOBUF), r.text
        reply = logs_service_pb2.ExportLogsServiceResponse.FromString(r.content)
        assert reply.partial_success.rejected_log_records == 1
        assert "traceId" in reply.partial_success.error_message

        squeezed = gzip.compress(otlp_request(["proto gzipped"]).SerializeToString())
        r = c.post(
            "/api/v1/otlp/v1/logs", content=squeezed, headers={"content-type": PROTOBUF, "content-encoding": "gzip"}
        )
        assert r.status_code == 200
        assert not logs_service_pb2.ExportLogsServiceResponse.FromString(r.content).HasField("partial_success")

        as_json = {
            "resourceLogs": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                    "futureField": {"ignored": True},
                    "scopeLogs": [
                        {
                            "scope": {"name": "js"},
                            "logRecords": [
                                {
                                    "timeUnixNano": str(int(datetime.now(UTC).timestamp() * 1e9)),
                                    "severityNumber": 17,
                                    "body": {"stringValue": "json one"},
                                    "traceId": TRACE.hex().upper(),
                                    "spanId": SPAN.hex(),
                                    "attributes": [{"key": "attempt", "value": {"intValue": "3"}}],
                                },
                                {"severityNumber": 99, "body": {"stringValue": "json bad severity"}},
                            ],
                        }
                    ],
                }
            ]
        }
        r = c.post("/api/v1/otlp/v1/logs", json=as_json)
        assert (r.status_code, r.headers["content-type"]) == (200, "application/json"), r.text
        assert r.json()["partialSuccess"]["rejectedLogRecords"] in (1, "1")
        r = c.post("/api/v1/otlp/v1/logs", json={"resourceLogs": []})
        assert (r.status_code, r.json()) == (200, {})

        r = c.post("/api/v1/otlp/v1/logs", content=b"\xff\xff\xff\xff garbage", headers={"content-type": PROTOBUF})
        assert (r.status_code, r.headers["content-type"]) == (400, PROTOBUF)
        assert status_pb2.Status.FromString(r.content).code == code_pb2.INVALID_ARGUMENT
        r = c.post("/api/v1/otlp/v1/logs", content=b"{garbage", headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_FAILED")

    records = {r["message"]: r for r in found(owner)}
    assert sorted(records) == ["json one", "proto gzipped", "proto one", "proto two"]
    one = records["proto one"]
    assert (one["level"], one["severityNumber"], one["service"]) == ("warn", 13, "otlp-svc")
    assert (one["traceId"], one["spanId"]) == (TRACE.hex(), SPAN.hex())
    assert one["attributes"] == {"http.status": 500, "user": "u-9"}
    assert one["resource"] == {"service.name": "otlp-svc"}
    js = records["json one"]
    assert (js["level"], js["service"], js["traceId"], js["attributes"]) == (
        "error",
        "json-svc",
        TRACE.hex(),
        {"attempt": 3},
    )
    assert messages(owner, 'attr.user:u-9 "proto two"') == ["proto two"]


def test_otlp_grpc_export_with_metadata_authorization(owner: Persona, server: Server) -> None:
    reader = owner.mint(name="reader", scopes=["logs:read"])["token"]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        request = otlp_request(["grpc one", "grpc two"], service="grpc-svc", trace=TRACE, span=SPAN)
        request.resource_logs.extend(otlp_request(["grpc bad"], span=b"\x00").resource_logs)
        reply = stub.Export(request, metadata=[("authorization", f"Bearer {owner.pat}")], timeout=10)
        assert reply.partial_success.rejected_log_records == 1
        with pytest.raises(grpc.RpcError) as refused:
            stub.Export(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as refused:
            stub.Export(request, metadata=[("authorization", f"Bearer {reader}")], timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    records = found(owner)
    assert sorted(r["message"] for r in records) == ["grpc one", "grpc two"]
    assert {(r["service"], r["traceId"], r["spanId"]) for r in records} == {("grpc-svc", TRACE.hex(), SPAN.hex())}


def test_ingest_is_a_mutation_idempotent_and_counted_but_not_audited(owner: Persona) -> None:
    """CONTRACT.md: a mutation is any authenticated POST: an Idempotency-Key replays, the PAT's
    dailyMutationLimit counts each request; the audit log keeps no entry per shipped batch."""
    key = "ingest-once-" + datetime.now(UTC).isoformat()
    first = ingest(owner, {"message": "exactly once please"}, **{"idempotency-key": key})
    again = ingest(owner, {"message": "exactly once please"}, **{"idempotency-key": key})
    assert (first.status_code, again.status_code) == (202, 202), again.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert first.json() == again.json()
    assert messages(owner, '"exactly once please"') == ["exactly once please"]
    other = ingest(owner, {"message": "another body"}, **{"idempotency-key": key})
    assert (other.status_code, other.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")

    capped = owner.mint(name="one mutation", scopes=["logs:write"], dailyMutationLimit=1)["token"]
    assert ingest(owner, {"message": "first of the day"}, token=capped).status_code == 202
    refused = ingest(owner, {"message": "second of the day"}, token=capped)
    assert (refused.status_code, refused.json()["code"]) == (429, "PAT_DAILY_LIMIT_EXCEEDED")
    assert messages(owner, '"second of the day"') == []
    with owner.client() as c:
        entries = c.get("/api/v1/audit-logs", params={"limit": 1000}).json()["entries"]
    assert not [e for e in entries if "log" in e["action"].lower()]


def test_what_one_request_may_hold(owner: Persona) -> None:
    """Records outside the kept window, over-long OTLP bodies and out-of-range counts are refused one
    by one (never a failed batch); a request of more than 100,000 records is 413; a gzip body of
    several members counts whole."""
    old, ahead = stamp(30 * 86400), stamp(-3 * 86400)
    r = ingest(owner, [{"message": "window ok"}, {"message": "too old", "timestamp": old},
                       {"message": "too far ahead", "timestamp": ahead}])  # fmt: skip
    assert r.status_code == 202, r.text
    assert [(x["index"], x["path"], x["code"]) for x in r.json()["rejections"]] == [
        (1, "timestamp", "too_small"), (2, "timestamp", "too_big")
    ]  # fmt: skip

    request = otlp_request(["otlp window ok", "x" * 70_000, "dropped too many"])
    request.resource_logs[0].scope_logs[0].log_records[2].dropped_attributes_count = 2**32 - 1
    request.resource_logs[0].scope_logs[0].log_records[2].time_unix_nano = 10**9  # 1970: too old
    with owner.client() as c:
        r = c.post("/api/v1/otlp/v1/logs", content=request.SerializeToString(), headers={"content-type": PROTOBUF})
        reply = logs_service_pb2.ExportLogsServiceResponse.FromString(r.content)
        assert (r.status_code, reply.partial_success.rejected_log_records) == (200, 2)
        assert "larger than 65536 bytes" in reply.partial_success.error_message
        many = b"\n".join(b'{"message":"m"}' for _ in range(100_001))
        r = c.post("/api/v1/logs", content=many, headers={"content-type": "application/x-ndjson"})
        assert (r.status_code, r.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")
        members = gzip.compress(b'{"message":"member one"}\n') + gzip.compress(b'{"message":"member two"}\n')
        r = c.post("/api/v1/logs", content=members,
                   headers={"content-type": "application/x-ndjson", "content-encoding": "gzip"})  # fmt: skip
        assert r.json()["accepted"] == 2, r.text
    assert sorted(messages(owner, "window OR member")) == ["member one", "member two", "otlp window ok", "window ok"]
