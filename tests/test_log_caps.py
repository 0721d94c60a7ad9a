"""Log ingest's limits end to end, on every backend: the PAT's
dailyLogBytesLimit and the plan's monthlyLogBytes refuse a request whole
(over our JSON API, OTLP/HTTP and OTLP/gRPC), hold under concurrency and
count what a client that left still had stored; and back-pressure (503 /
UNAVAILABLE with a retry hint) keeps nothing of a refused request.

One server per backend for the module: its queue is the smallest allowed
(1000 records), so back-pressure is reachable, and it knows a small plan.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import orjson
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from core.logs.otlp import map_otlp_request
from core.logs.records import approx_size
from tests.conftest import BACKENDS, Persona, Server, register, set_plan, start_server, stop_server
from tests.logs_client import PROTOBUF, found, ingest, messages, otlp_request, search, size_of, used_today
from tests.polling import wait_for

PLAN_BYTES = 2000
ENV = {
    "OBSERVE_PLANS": json.dumps({"tiny": {"monthlyLogBytes": PLAN_BYTES}}),
    "OBSERVE_LOG_QUEUE_RECORDS": "1000",
}


@pytest.fixture(scope="module", params=BACKENDS)
def logs_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp(f"log-caps-{request.param}"), backend=request.param, extra_env=ENV)
    yield srv
    stop_server(srv)


@pytest.fixture
def persona(logs_server: Server) -> Persona:
    return register(logs_server)


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
    """16 requests at once, of which 4 fit: 4 are stored, and the usage is what was stored."""
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
    assert accepted == fit, codes  # never more, and a race for the last room refuses nobody who fits
    assert len(found(persona)) == accepted
    with persona.client() as c:
        assert c.get("/api/v1/me").json()["usage"]["monthlyLogBytes"] == accepted * size_of(body)


# ---------------------------------------------------------------- back-pressure

BATCH = 900  # over the queue of 1000 with any other batch waiting


def pressure_batch(tag: str) -> list[dict[str, Any]]:
    return [{"message": f"pressure {n} " + "z" * 400, "attributes": {"batch": tag}} for n in range(BATCH)]


def grpc_pressure_batch(tag: str) -> logs_service_pb2.ExportLogsServiceRequest:
    return otlp_request([f"pressure grpc {n} " + "z" * 400 for n in range(BATCH)], attrs={"batch": tag})


def test_under_pressure_ingest_refuses_whole_requests_with_a_retry_hint(persona: Persona, logs_server: Server) -> None:
    """Bursts of 12 clients post 900-record batches into a queue of 1000: some
    are refused (503 + Retry-After over our API and OTLP/HTTP, there with a
    google.rpc.Status body; UNAVAILABLE + RetryInfo over gRPC); every
    accepted batch is stored whole and no refused one at all, and only
    accepted ones count against the PAT's and the plan's caps."""
    token = persona.mint(name="pressure", scopes=["logs:write"], dailyLogBytesLimit=2**40)["token"]
    outcomes: dict[str, int] = {}
    refusals: list[httpx.Response] = []

    def post(tag: str) -> None:
        r = ingest(persona, pressure_batch(tag), token=token)
        outcomes[tag] = r.status_code
        if r.status_code == 503:
            refusals.append(r)

    otlp_outcomes: dict[str, int] = {}
    otlp_refusals: list[httpx.Response] = []

    def post_otlp(tag: str) -> None:
        with persona.client(token) as c:
            body = grpc_pressure_batch(tag).SerializeToString()
            r = c.post("/api/v1/otlp/v1/logs", content=body, headers={"content-type": PROTOBUF})
        otlp_outcomes[tag] = r.status_code
        if r.status_code == 503:
            otlp_refusals.append(r)

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
        for round_ in range(6):  # until each transport has seen both outcomes (the first round, as a rule)
            # One transport's burst at a time: its first request finds the queue empty and is taken, the
            # others arrive while that one is written. (Mixed bursts let one transport lose every race.)
            transports: list[tuple[str, Callable[[str], None]]] = [
                ("rest", post),
                ("otlp", post_otlp),
                ("grpc", functools.partial(export, stub)),
            ]
            for name, send in transports:
                burst = [pool.submit(send, f"{name}-{round_}-{n}") for n in range(12)]
                for future in burst:
                    future.result()
            rest_seen, otlp_seen, grpc_seen = (
                set(outcomes.values()),
                set(otlp_outcomes.values()),
                set(grpc_outcomes.values()),
            )
            if (
                rest_seen >= {202, 503}
                and otlp_seen >= {200, 503}
                and grpc_seen >= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
            ):
                break

    assert set(outcomes.values()) <= {202, 503}, outcomes
    assert set(grpc_outcomes.values()) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, grpc_outcomes
    assert refusals, "no REST request was pushed back"
    assert {(r.json()["code"], int(r.headers["retry-after"]) >= 1) for r in refusals} == {("UNAVAILABLE", True)}
    assert set(otlp_outcomes.values()) == {200, 503}, otlp_outcomes
    for r in otlp_refusals:
        assert (r.headers["content-type"], int(r.headers["retry-after"]) >= 1) == (PROTOBUF, True)
        assert status_pb2.Status.FromString(r.content).code == code_pb2.UNAVAILABLE
    assert grpc.StatusCode.UNAVAILABLE in grpc_outcomes.values(), "no gRPC call was pushed back"
    assert len(retry_infos) == list(grpc_outcomes.values()).count(grpc.StatusCode.UNAVAILABLE)
    assert all(info.retry_delay.seconds >= 1 for info in retry_infos)
    assert 202 in outcomes.values()
    assert grpc.StatusCode.OK in grpc_outcomes.values()

    every = {
        **{t: s == 202 for t, s in outcomes.items()},
        **{t: s == 200 for t, s in otlp_outcomes.items()},
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
