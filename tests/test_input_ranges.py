"""Times, ranges and cursors the server cannot hold or compute are a 400 on
their field, never a 500; duplicate JSON keys are refused (CONTRACT.md,
"Input hygiene")."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from observe.v1 import audit_pb2, audit_pb2_grpc, monitors_pb2, monitors_pb2_grpc, tokens_pb2, tokens_pb2_grpc

from tests.conftest import Persona, Server, register
from tests.test_grpc import _auth, _details
from tests.test_monitors import create

LONG_RANGE = {"from": "1970-01-01T00:00:00Z", "to": "9999-01-01T00:00:00Z"}


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _violation(r: Any) -> tuple[int, str, list[tuple[str, str]]]:
    body = r.json()
    return r.status_code, body["code"], [(f["path"], f["code"]) for f in body.get("fields", [])]


@pytest.fixture
def monitor(owner: Persona) -> dict[str, Any]:
    with owner.client() as c:
        return create(c, tags=["ranges"])


@pytest.fixture(scope="module")
def reader(server: Server) -> Persona:
    """One user for the out-of-range queries (per backend): they only read, and each is refused."""
    return register(server)


@pytest.fixture(scope="module")
def readers_monitor(reader: Persona) -> dict[str, Any]:
    with reader.client() as c:
        return create(c, tags=["ranges"])


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/audit-logs", {"to": "9999-12-31T23:59:59-14:00"}, "to"),
        ("/api/v1/audit-logs", {"from": "0001-01-01T00:00:00+14:00"}, "from"),
        ("/api/v1/monitors/{id}/timeline", {"from": "0001-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ("/api/v1/monitors/{id}/timeline", {"to": "9999-12-31T23:59:59-01:00"}, "to"),
        # 8,000 years over 90 buckets: a bucket beyond what bucketSec holds.
        ("/api/v1/monitors/{id}/timeline", LONG_RANGE, "from"),
        ("/api/v1/monitors/{id}/timeline", {**LONG_RANGE, "bucketSec": 300}, "bucketSec"),
        # ids past int64 in a well-formed cursor of each list
        ("/api/v1/monitors", {"cursor": "bTk5OTk5OTk5OTk5OTk5OTk5OTk"}, "cursor"),
        ("/api/v1/monitors", {"cursor": _cursor("m9223372036854775808")}, "cursor"),
        ("/api/v1/monitors/{id}/checks", {"cursor": _cursor("c99999999999999999999")}, "cursor"),
        ("/api/v1/audit-logs", {"cursor": _cursor("a99999999999999999999")}, "cursor"),
        ("/api/v1/audit-logs", {"cursor": _cursor("a١٢")}, "cursor"),  # non-ASCII digits
    ],
)
def test_out_of_range_queries_are_a_400_on_their_field(
    reader: Persona, readers_monitor: dict[str, Any], path: str, params: dict[str, Any], field: str
) -> None:
    with reader.client() as c:
        r = c.get(path.format(id=readers_monitor["id"]), params=params)
    status, code, fields = _violation(r)
    assert (status, code) == (400, "VALIDATION_FAILED"), r.text
    assert field in [p for p, _ in fields]


def test_a_time_out_of_range_once_the_offset_is_applied_is_a_400(owner: Persona) -> None:
    with owner.client() as c:
        late = c.post("/api/v1/me/tokens", json={"name": "x", "expiresAt": "9999-12-31T23:59:59-14:00"})
        last = c.post("/api/v1/me/tokens", json={"name": "x", "expiresAt": "9999-12-31T23:59:59Z"})
    assert _violation(late) == (400, "VALIDATION_FAILED", [("expiresAt", "invalid_string")])
    assert (last.status_code, last.json()["expiresAt"]) == (201, "9999-12-31T23:59:59Z")


def test_the_largest_cursor_id_and_the_edges_of_time_still_work(owner: Persona, monitor: dict[str, Any]) -> None:
    with owner.client() as c:
        page = c.get("/api/v1/monitors", params={"cursor": _cursor("m9223372036854775807")})
        early = c.get(f"/api/v1/monitors/{monitor['id']}/timeline", params={"to": "0001-01-01T00:00:01Z"})
        late = c.get(
            f"/api/v1/monitors/{monitor['id']}/timeline",
            params={"from": "9999-12-31T00:00:00Z", "to": "9999-12-31T23:59:59Z", "bucketSec": 3600},
        )
    assert (page.status_code, page.json()["monitors"]) == (200, [])
    assert early.status_code == 200, early.text
    assert early.json()["buckets"][0]["start"] == "0001-01-01T00:00:00Z"
    assert late.status_code == 200, late.text
    assert late.json()["buckets"][-1]["start"] == "9999-12-31T23:00:00Z"


@pytest.fixture
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


def test_grpc_timestamps_outside_the_timestamp_range_are_invalid_arguments(
    owner: Persona, monitor: dict[str, Any], channel: grpc.Channel
) -> None:
    beyond = Timestamp(seconds=253402300800)  # 10000-01-01: no Timestamp, no datetime
    before = Timestamp(seconds=-62135596801)
    calls = [
        (lambda: audit_pb2_grpc.AuditServiceStub(channel).ListAuditLogs(
            audit_pb2.ListAuditLogsRequest(to_time=beyond), metadata=_auth(owner.pat)), "to"),
        (lambda: monitors_pb2_grpc.MonitorServiceStub(channel).GetMonitorTimeline(
            monitors_pb2.GetMonitorTimelineRequest(id=monitor["id"], from_time=before), metadata=_auth(owner.pat)),
         "from"),
        (lambda: tokens_pb2_grpc.TokenServiceStub(channel).CreateToken(
            tokens_pb2.CreateTokenRequest(name="x", expires_at=Timestamp(seconds=1, nanos=-1)),
            metadata=_auth(owner.pat)), "expiresAt"),
        (lambda: monitors_pb2_grpc.MonitorServiceStub(channel).ListMonitors(
            monitors_pb2.ListMonitorsRequest(cursor=_cursor("m99999999999999999999")), metadata=_auth(owner.pat)),
         "cursor"),
    ]  # fmt: skip
    for call, field in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        reason, fields = _details(caught.value)
        assert reason == "VALIDATION_FAILED"
        assert field in [path for path, _ in fields]


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"name":"x","scopes":["*"],"scopes":["monitors:read"]}', "scopes"),
        (b'{"name":"x","name" : "y"}', "name"),
        (b'{"name":"x","scopes":["*"],"dailyMutationLimit":5,\n"dailyMutationLimit"\t:6}', "dailyMutationLimit"),
        # a colon written as \u003a cannot hide a repeat
        (b'{"name":"a\\u003a","scopes":["*"],"scopes":["monitors:read"]}', "scopes"),
    ],
)
def test_duplicate_json_keys_are_refused(owner: Persona, raw: bytes, path: str) -> None:
    with owner.client() as c:
        r = c.post("/api/v1/me/tokens", content=raw, headers={"content-type": "application/json"})
        listed = c.get("/api/v1/me/tokens").json()["tokens"]
    assert _violation(r) == (400, "VALIDATION_FAILED", [(path, "custom")])
    assert all(t["name"] not in ("x", "y", "a:") for t in listed)


def test_duplicate_keys_are_refused_at_any_depth(owner: Persona) -> None:
    raw = (
        b'{"monitors":[{"name":"a","type":"http","url":"http://127.0.0.1:9/"},'
        b'{"name":"b","type":"http","url":"http://127.0.0.1:9/","headers":{"X-A":"1","X-A":"2"}}]}'
    )
    with owner.client() as c:
        r = c.post("/api/v1/monitors/bulk", content=raw, headers={"content-type": "application/json"})
    assert _violation(r) == (400, "VALIDATION_FAILED", [("monitors[1].headers.X-A", "custom")])


def test_strings_holding_quotes_and_colons_are_not_duplicates(owner: Persona) -> None:
    raw = b'{"name":"a\\":b \\" : c https://x:1/"}'
    with owner.client() as c:
        r = c.post("/api/v1/me/tokens", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == 'a":b " : c https://x:1/'
