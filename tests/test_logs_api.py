"""The logs API end to end, on every backend: our JSON ingest (object, array,
NDJSON, gzip), per-record rejections, body limits, search (newest first,
cursors, windows, bad queries), scopes and roles, the PAT's daily log-byte
cap and the plan's monthly one (all or nothing), OTLP over HTTP (protobuf
and JSON) and gRPC, and back-pressure (503 / UNAVAILABLE with a retry hint,
and nothing of a refused request stored).

One server per backend for the module: its queue is the smallest allowed
(1000 records) so back-pressure is reachable, and it knows a small plan.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import orjson
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2 as otlp_logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from core.logs.otlp import map_otlp_request
from core.logs.records import approx_size, parse_api_body
from tests.conftest import BACKENDS, Persona, Server, SmtpSink, make_team, register, set_plan, start_server, stop_server
from tests.polling import wait_for

PLAN_BYTES = 2000
ENV = {
    "OBSERVE_PLANS": json.dumps({"tiny": {"monthlyLogBytes": PLAN_BYTES}}),
    "OBSERVE_LOG_QUEUE_RECORDS": "1000",
}
PROTOBUF = "application/x-protobuf"


@pytest.fixture(scope="module", params=BACKENDS)
def logs_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, smtp_sink: SmtpSink
) -> Iterator[Server]:
    env = {**ENV, "OBSERVE_SMTP_HOST": "127.0.0.1", "OBSERVE_SMTP_PORT": str(smtp_sink.port)}
    srv = start_server(tmp_path_factory.mktemp(f"logs-api-{request.param}"), backend=request.param, extra_env=env)
    yield srv
    stop_server(srv)


@pytest.fixture
def persona(logs_server: Server) -> Persona:
    return register(logs_server)


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


def stamp(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds")


def field_paths(r: httpx.Response) -> list[tuple[str, str]]:
    return [(f["path"], f["code"]) for f in r.json()["fields"]]


# ---------------------------------------------------------------- our JSON ingest


def test_an_object_an_array_ndjson_and_gzip_are_stored_with_every_field(persona: Persona) -> None:
    full: dict[str, Any] = {
        "timestamp": stamp(60),
        "level": "error",
        "message": "payment declined for order 17",
        "service": "checkout",
        "attributes": {"http": {"status": 502}, "user": "u-1", "retry": True},
        "traceId": "4BF92F3577B34DA6A3CE929D0E0E4736",
        "spanId": "00f067aa0ba902b7",
    }
    r = ingest(persona, full)
    assert (r.status_code, r.json()) == (202, {"accepted": 1, "rejected": 0, "rejections": []})
    r = ingest(persona, [{"message": "array one"}, {"message": "array two", "level": "debug"}])
    assert r.json()["accepted"] == 2, r.text
    ndjson = b'{"message": "line zero"}\n\n{"message": "line two", "level": "warn"}\n{"message": "line three"}\n'
    r = ingest(persona, ndjson, **{"content-type": "application/x-ndjson"})
    assert r.json() == {"accepted": 3, "rejected": 0, "rejections": []}, r.text
    squeezed = gzip.compress(orjson.dumps([{"message": "gzipped one"}, {"message": "gzipped two"}]))
    r = ingest(persona, squeezed, **{"content-encoding": "gzip"})
    assert r.json()["accepted"] == 2, r.text

    records = found(persona)
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
    assert messages(persona, "service:checkout level>=error") == [full["message"]]
    assert messages(persona, "traceId:4bf92f3577b34da6a3ce929d0e0e4736 attr.user:u-1 attr.retry:true") == [
        full["message"]
    ]


def test_bad_records_are_rejected_one_by_one_and_a_body_of_only_bad_ones_is_400(persona: Persona) -> None:
    body = [
        {"message": "kept zero"},
        {"message": "loud", "level": "loud"},
        {"message": "extra", "colour": "red"},
        {"message": "kept three", "traceId": "abc"},
        {"message": "kept four"},
    ]
    r = ingest(persona, body)
    assert r.status_code == 202, r.text
    assert (r.json()["accepted"], r.json()["rejected"]) == (2, 3)
    assert [(x["index"], x["path"], x["code"]) for x in r.json()["rejections"]] == [
        (1, "level", "invalid_enum_value"),
        (2, "colour", "unrecognized_keys"),
        (3, "traceId", "invalid_string"),
    ]
    ndjson = b'{"message": "line kept"}\n{"message": \n{"message": "dup", "message": "x"}\n'
    r = ingest(persona, ndjson, **{"content-type": "application/x-ndjson"})
    assert r.status_code == 202, r.text
    assert [(x["index"], x["path"], x["code"]) for x in r.json()["rejections"]] == [
        (1, "", "invalid_type"),
        (2, "message", "custom"),
    ]
    assert sorted(messages(persona)) == ["kept four", "kept zero", "line kept"]

    r = ingest(persona, [{"message": ""}, {"message": "x", "level": 3}])
    assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_FAILED")
    assert field_paths(r) == [("[0].message", "too_small"), ("[1].level", "invalid_type")]
    empty: Any
    for empty in ([], b"null", b"not json", b"{"):
        r = ingest(persona, empty)
        assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_FAILED"), (empty, r.text)
    assert len(found(persona)) == 3


def test_wrong_media_types_encodings_and_bodies_too_large_are_refused(persona: Persona) -> None:
    r = ingest(persona, b"message=hello", **{"content-type": "text/plain"})
    assert (r.status_code, r.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    r = ingest(persona, b'{"message": "x"}', **{"content-encoding": "br"})
    assert (r.status_code, r.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    r = ingest(persona, b"\x1f\x8b not gzip at all", **{"content-encoding": "gzip"})
    assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_FAILED")
    # A small bomb: 20 KB of gzip that would be 21 MiB of JSON.
    bomb = gzip.compress(b'[{"message": "' + b"a" * (21 * 1024 * 1024) + b'"}]', compresslevel=9)
    assert len(bomb) < 100_000
    with persona.client() as c:
        for path, media in (("/api/v1/logs", "application/json"), ("/api/v1/otlp/v1/logs", PROTOBUF)):
            r = c.post(path, content=bomb, headers={"content-type": media, "content-encoding": "gzip"})
            assert (r.status_code, r.json()["code"]) == (413, "PAYLOAD_TOO_LARGE"), (path, r.text)
        r = c.post("/api/v1/otlp/v1/logs", content=b"{}", headers={"content-type": "text/plain"})
        assert (r.status_code, r.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert found(persona) == []


# ---------------------------------------------------------------- search


def test_search_pages_newest_first_within_the_window(persona: Persona) -> None:
    # Five records a second apart (oldest "r1"), and two outside the default hour.
    body = [{"message": f"r{n} paged", "timestamp": stamp(10 - n)} for n in range(1, 6)]
    body += [
        {"message": "two hours old", "timestamp": stamp(7200)},
        {"message": "in a day", "timestamp": stamp(-86000)},
    ]
    assert ingest(persona, body).json()["accepted"] == 7

    pages: list[list[str]] = []
    cursor = ""
    while True:
        r = search(persona, "paged", limit=2, **({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        pages.append([x["message"] for x in r.json()["records"]])
        cursor = r.json()["nextCursor"]
        if not cursor:
            break
    assert pages == [["r5 paged", "r4 paged"], ["r3 paged", "r2 paged"], ["r1 paged"]]

    assert messages(persona) == ["r5 paged", "r4 paged", "r3 paged", "r2 paged", "r1 paged"]
    window = {"from": stamp(8.5), "to": stamp(6.5)}
    assert messages(persona, **window) == ["r3 paged", "r2 paged"]
    assert messages(persona, **{"from": stamp(3 * 3600)}) == [
        *[f"r{n} paged" for n in range(5, 0, -1)],
        "two hours old",
    ]
    assert messages(persona, **{"from": stamp(60), "to": stamp(-2 * 86400)})[0] == "in a day"
    assert messages(persona, "-paged", **{"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}) == [
        "in a day",
        "two hours old",
    ]


def test_bad_search_parameters_name_their_field(persona: Persona) -> None:
    ingest(persona, [{"message": "one"}, {"message": "two"}, {"message": "three"}])
    issued = search(persona, limit=1).json()["nextCursor"]
    assert issued
    r = search(persona, "level>=loud")
    assert (r.status_code, field_paths(r)) == (400, [("q", "invalid_string")])
    assert "at position 8" in r.json()["fields"][0]["message"], r.text
    r = search(persona, 'service:"unclosed')
    assert field_paths(r) == [("q", "invalid_string")]
    assert "at position" in r.json()["fields"][0]["message"]
    forged = issued[:-2] + ("AA" if not issued.endswith("AA") else "BB")
    for cursor in ("not-a-cursor", forged, "x" * 64):
        r = search(persona, cursor=cursor)
        assert (r.status_code, field_paths(r)) == (400, [("cursor", "invalid_string")]), (cursor, r.text)
    assert field_paths(search(persona, **{"from": stamp(0), "to": stamp(60)}))[0][0] == "from"
    for limit in (0, 1001):
        assert field_paths(search(persona, limit=limit))[0][0] == "limit"
    assert search(persona, cursor=issued, limit=1).status_code == 200
    r = search(persona, **{"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"})
    assert (r.status_code, len(r.json()["records"])) == (200, 3)


# ---------------------------------------------------------------- who may


def test_scopes_and_roles_decide_who_ingests_and_who_searches(logs_server: Server, smtp_sink: SmtpSink) -> None:
    team = make_team(logs_server, smtp_sink)
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
    outsider = register(logs_server)
    assert messages(outsider) == []
    with httpx.Client(base_url=logs_server.base_url) as anonymous:
        r = anonymous.post("/api/v1/logs", json={"message": "anonymous"})
        assert (r.status_code, r.json()["code"]) == (401, "AUTH_REQUIRED")


# ---------------------------------------------------------------- caps


def size_of(body: list[dict[str, Any]]) -> int:
    """What the caps count for a body (the server's own measure)."""
    records, _ = parse_api_body(orjson.dumps(body), "application/json", datetime.now(UTC))
    return sum(approx_size(r) for r in records)


def test_a_request_over_the_daily_log_byte_cap_is_refused_whole(persona: Persona, logs_server: Server) -> None:
    def batch(tag: str, n: int) -> list[dict[str, Any]]:
        return [{"message": f"{tag} record {i} " + "x" * 80} for i in range(n)]

    first, over, fits = batch("first", 5), batch("over", 2), batch("fits", 1)
    limit = size_of(first) + size_of(fits)  # "over" would pass it by one record
    capped = persona.mint(name="shipper", scopes=["logs:write"], dailyLogBytesLimit=limit)["token"]
    assert ingest(persona, first, token=capped).status_code == 202
    r = ingest(persona, over, token=capped)
    assert (r.status_code, r.json()["code"]) == (429, "PAT_DAILY_LIMIT_EXCEEDED")
    assert int(r.headers["retry-after"]) > 0
    # Over OTLP the refusal is OTLP's: 429, a google.rpc.Status for a protobuf request.
    with persona.client(capped) as c:
        r = c.post(
            "/api/v1/otlp/v1/logs",
            content=otlp_request(["over otlp"] * 30).SerializeToString(),
            headers={"content-type": PROTOBUF},
        )
    assert (r.status_code, r.headers["content-type"]) == (429, PROTOBUF)
    assert status_pb2.Status.FromString(r.content).code == code_pb2.RESOURCE_EXHAUSTED
    assert "retry-after" in r.headers
    with grpc.insecure_channel(logs_server.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            logs_service_pb2_grpc.LogsServiceStub(channel).Export(
                otlp_request(["over grpc"] * 30), metadata=[("authorization", f"Bearer {capped}")], timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ingest(persona, fits, token=capped).status_code == 202  # exactly at the cap
    assert ingest(persona, [{"message": "a"}], token=capped).status_code == 429

    assert messages(persona, "over") == []
    assert sorted(messages(persona)) == sorted(x["message"] for x in first + fits)
    with persona.client() as c:
        listed = next(t for t in c.get("/api/v1/me/tokens").json()["tokens"] if t["name"] == "shipper")
    assert (listed["dailyLogBytesLimit"], listed["dailyLogBytesUsedToday"]) == (limit, limit)


def used_today(persona: Persona, name: str) -> int:
    with persona.client() as c:
        return int(
            next(t for t in c.get("/api/v1/me/tokens").json()["tokens"] if t["name"] == name)["dailyLogBytesUsedToday"]
        )


@pytest.mark.parametrize("logs_server", ["sqlite"], indirect=True)
def test_a_client_that_leaves_before_the_reply_has_its_stored_records_counted(
    logs_server: Server, persona: Persona
) -> None:
    """Clients send a batch and close the connection while the writer is
    held up (the test holds the SQLite log file's write lock): once the
    writer goes on, what it stores of them is counted against the PAT's
    daily cap and the plan's usage, byte for byte. (The gateway cancels a
    call whose client left; ingest used to refund the bytes of records it
    then stored anyway.)"""
    token = persona.mint(name="leaver", scopes=["logs:write"], dailyLogBytesLimit=2**40)["token"]
    url = urlsplit(logs_server.base_url)
    bodies = {tag: [{"message": f"leaver {k}", "attributes": {"batch": tag}} for k in range(200)] for tag in "abcd"}
    lock = sqlite3.connect(logs_server.data_dir / "observe.logs.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        sockets = []
        for body in bodies.values():
            raw = orjson.dumps(body)
            sock = socket.create_connection((url.hostname or "", url.port or 80))
            head = (
                f"POST /api/v1/logs HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
            )
            sock.sendall(head.encode() + raw)
            sockets.append(sock)
        # Every request has passed the caps and waits for the held writer.
        wait_for(lambda: used_today(persona, "leaver") == 4 * size_of(bodies["a"]), "the requests at the writer")
        for sock in sockets:
            sock.close()
        time.sleep(0.3)  # the server sees the clients leave (a shorter wait only weakens the test)
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    def numbers() -> tuple[int, int, int]:
        """(bytes stored, bytes counted today, bytes counted this month)."""
        stored = {tag: len(found(persona, f"attr.batch:{tag}")) for tag in bodies}
        with persona.client() as c:
            usage = c.get("/api/v1/me").json()["usage"]["monthlyLogBytes"]
        return sum(size_of(bodies[tag]) * n // 200 for tag, n in stored.items()), used_today(persona, "leaver"), usage

    everything = size_of(bodies["a"]) * 4
    with contextlib.suppress(AssertionError):
        wait_for(lambda: numbers() == (everything,) * 3, "the stored records counted", timeout=5, every=0.1)
    assert numbers() == (everything,) * 3


def test_the_plans_monthly_log_bytes_refuse_a_request_whole(persona: Persona, logs_server: Server) -> None:
    assert set_plan(logs_server, persona.org_id, "tiny").returncode == 0
    first = [{"message": f"planned {i} " + "y" * 100} for i in range(8)]
    used = size_of(first)
    assert used < PLAN_BYTES < used + size_of(first[:4])
    assert ingest(persona, first).status_code == 202
    r = ingest(persona, [{"message": f"past the plan {i} " + "y" * 100} for i in range(4)])
    assert (r.status_code, r.json()["code"]) == (402, "PLAN_LIMIT_LOG_BYTES")
    assert messages(persona, "past") == []
    assert len(found(persona)) == 8
    with persona.client() as c:
        assert c.get("/api/v1/me").json()["usage"]["monthlyLogBytes"] == used


def test_concurrent_requests_never_pass_the_plans_monthly_log_bytes(logs_server: Server) -> None:
    """16 requests at once, of which 4 fit: at most 4 are stored, and the usage is what was stored."""
    persona = register(logs_server)
    assert set_plan(logs_server, persona.org_id, "tiny").returncode == 0
    body = [{"message": "m" * 400}]
    fit = PLAN_BYTES // size_of(body)
    assert fit == 4
    clients = [persona.client() for _ in range(16)]
    try:
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda c: c.post("/api/v1/logs", json=body).status_code, clients))
    finally:
        for c in clients:
            c.close()
    assert set(codes) <= {202, 402}, codes
    accepted = codes.count(202)
    assert 1 <= accepted <= fit, codes
    assert len(found(persona)) == accepted
    with persona.client() as c:
        assert c.get("/api/v1/me").json()["usage"]["monthlyLogBytes"] == accepted * size_of(body)


# ---------------------------------------------------------------- OTLP


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


TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")


def test_otlp_http_protobuf_and_json_with_partial_success(persona: Persona) -> None:
    good = otlp_request(["proto one", "proto two"], attrs={"http.status": 500, "user": "u-9"}, trace=TRACE, span=SPAN)
    bad = otlp_request(["proto bad id"], trace=b"\x01\x02\x03")
    good.resource_logs.extend(bad.resource_logs)
    with persona.client() as c:
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

    records = {r["message"]: r for r in found(persona)}
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
    assert messages(persona, 'attr.user:u-9 "proto two"') == ["proto two"]


def test_otlp_grpc_export_with_metadata_authorization(persona: Persona, logs_server: Server) -> None:
    reader = persona.mint(name="reader", scopes=["logs:read"])["token"]
    with grpc.insecure_channel(logs_server.grpc_target) as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        request = otlp_request(["grpc one", "grpc two"], service="grpc-svc", trace=TRACE, span=SPAN)
        request.resource_logs.extend(otlp_request(["grpc bad"], span=b"\x00").resource_logs)
        reply = stub.Export(request, metadata=[("authorization", f"Bearer {persona.pat}")], timeout=10)
        assert reply.partial_success.rejected_log_records == 1
        with pytest.raises(grpc.RpcError) as refused:
            stub.Export(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as refused:
            stub.Export(request, metadata=[("authorization", f"Bearer {reader}")], timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    records = found(persona)
    assert sorted(r["message"] for r in records) == ["grpc one", "grpc two"]
    assert {(r["service"], r["traceId"], r["spanId"]) for r in records} == {("grpc-svc", TRACE.hex(), SPAN.hex())}


# ---------------------------------------------------------------- back-pressure

BATCH = 900  # over the queue of 1000 with any other batch waiting


def pressure_batch(tag: str) -> list[dict[str, Any]]:
    return [{"message": f"pressure {n} " + "z" * 400, "attributes": {"batch": tag}} for n in range(BATCH)]


def grpc_pressure_batch(tag: str) -> logs_service_pb2.ExportLogsServiceRequest:
    return otlp_request([f"pressure grpc {n} " + "z" * 400 for n in range(BATCH)], attrs={"batch": tag})


def test_under_pressure_ingest_refuses_whole_requests_with_a_retry_hint(persona: Persona, logs_server: Server) -> None:
    """32 clients post 900-record batches at once into a queue of 1000: some
    are refused (503 + Retry-After over REST, UNAVAILABLE + RetryInfo over
    gRPC); every accepted batch is stored whole and no refused one at all,
    and only accepted ones count against the PAT's and the plan's caps."""
    token = persona.mint(name="pressure", scopes=["logs:write"], dailyLogBytesLimit=2**40)["token"]
    outcomes: dict[str, int] = {}
    refusals: list[httpx.Response] = []

    def post(tag: str) -> None:
        r = ingest(persona, pressure_batch(tag), token=token)
        outcomes[tag] = r.status_code
        if r.status_code == 503:
            refusals.append(r)

    grpc_outcomes: dict[str, grpc.StatusCode] = {}
    retry_infos: list[error_details_pb2.RetryInfo] = []

    def export(stub: Any, tag: str) -> None:
        try:
            stub.Export(grpc_pressure_batch(tag), metadata=[("authorization", f"Bearer {token}")], timeout=30)
            grpc_outcomes[tag] = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            grpc_outcomes[tag] = exc.code()
            status = rpc_status.from_call(exc)  # type: ignore[arg-type]
            for detail in status.details if status else []:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    retry_infos.append(info)

    with grpc.insecure_channel(logs_server.grpc_target) as channel, ThreadPoolExecutor(32) as pool:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        for round_ in range(6):  # until each transport has seen both outcomes
            futures = [pool.submit(post, f"rest-{round_}-{n}") for n in range(16)]
            futures += [pool.submit(export, stub, f"grpc-{round_}-{n}") for n in range(16)]
            for future in futures:
                future.result()
            rest_seen, grpc_seen = set(outcomes.values()), set(grpc_outcomes.values())
            if rest_seen >= {202, 503} and grpc_seen >= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}:
                break

    assert set(outcomes.values()) <= {202, 503}, outcomes
    assert set(grpc_outcomes.values()) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, grpc_outcomes
    assert refusals, "no REST request was pushed back"
    assert {(r.json()["code"], int(r.headers["retry-after"]) >= 1) for r in refusals} == {("UNAVAILABLE", True)}
    assert grpc.StatusCode.UNAVAILABLE in grpc_outcomes.values(), "no gRPC call was pushed back"
    assert len(retry_infos) == list(grpc_outcomes.values()).count(grpc.StatusCode.UNAVAILABLE)
    assert all(info.retry_delay.seconds >= 1 for info in retry_infos)
    assert 202 in outcomes.values()
    assert grpc.StatusCode.OK in grpc_outcomes.values()

    every = {
        **{t: s == 202 for t, s in outcomes.items()},
        **{t: s == grpc.StatusCode.OK for t, s in grpc_outcomes.items()},
    }

    def count(tag: str) -> int:
        return len(search(persona, f"attr.batch:{tag}", limit=1000).json()["records"])

    with ThreadPoolExecutor(8) as pool:
        counts = dict(zip(every, pool.map(count, every), strict=True))
    wrong = {tag: counts[tag] for tag, accepted in every.items() if counts[tag] != (BATCH if accepted else 0)}
    assert not wrong, wrong

    def size(tag: str) -> int:
        if tag.startswith("rest"):
            return size_of(pressure_batch(tag))
        records, _, _ = map_otlp_request(grpc_pressure_batch(tag), datetime.now(UTC))
        return sum(approx_size(r) for r in records)

    accepted_bytes = sum(size(tag) for tag, accepted in every.items() if accepted)
    with persona.client() as c:
        listed = next(t for t in c.get("/api/v1/me/tokens").json()["tokens"] if t["name"] == "pressure")
        assert listed["dailyLogBytesUsedToday"] == accepted_bytes
        assert c.get("/api/v1/me").json()["usage"]["monthlyLogBytes"] == accepted_bytes
