"""Live tail over SSE and gRPC: a query filter passes matching records only,
in commit order; a bad query is a 400 naming the position; a client that
never reads is dropped while ingest and other tails carry on; and, with
PostgreSQL and Redis, tails on one server see what another one ingested.

The SSE client is a plain socket (tests/test_log_tail.py ``SseTail``): it
can shrink its receive buffer, so a client that stops reading backs up into
the server's tail queue after a few hundred kilobytes instead of the
tens of megabytes a default loopback socket would soak up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import uuid
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import grpc
import httpx
import orjson
import pytest
from observe.v1 import logs_pb2, logs_pb2_grpc

from core.errors import ErrorCode, ObserveError
from core.logs.match import compile_matcher
from core.logs.query import parse
from core.logs.records import record_of
from core.logs.store import Row, StoredRecord
from core.logs.tail import MAX_TAILS, MAX_TAILS_PER_ORG, QUEUE_RECORDS, TailBroker
from tests.conftest import PG_URL, REDIS_URL, Persona, Server, register, start_server, stop_server
from tests.polling import wait_for


class SseTail:
    """``GET /api/v1/logs/tail`` read on a thread: ``events`` holds each
    event as ``(type, data)`` ("message" or "error") as it arrives."""

    def __init__(self, base_url: str, token: str, q: str = "", *, receive_buffer: int | None = None) -> None:
        url = urlsplit(base_url)
        self.sock = socket.socket()
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(60)
        self.sock.connect((url.hostname or "127.0.0.1", url.port or 80))
        self.sock.sendall(
            f"GET /api/v1/logs/tail?q={quote(q)} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        self.file = self.sock.makefile("rb")
        status_line = self.file.readline().decode()
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        while (line := self.file.readline().decode().strip()) != "":
            name, _, value = line.partition(":")
            self.headers[name.lower()] = value.strip()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.ended = threading.Event()
        self._thread: threading.Thread | None = None

    def body(self) -> dict[str, Any]:
        """An error reply's JSON body."""
        return dict(orjson.loads(b"".join(self._chunks())))

    def _chunks(self) -> Iterator[bytes]:
        if "content-length" in self.headers:
            yield self.file.read(int(self.headers["content-length"]))
            return
        while size := int(self.file.readline().strip() or b"0", 16):
            yield self.file.read(size)
            self.file.readline()

    def read_one(self) -> tuple[str, dict[str, Any]]:
        """Reads on this thread until one event is complete (the first: listening)."""
        self._events = self._parse()
        return next(self._events)

    def _parse(self) -> Iterator[tuple[str, dict[str, Any]]]:
        pending = b""
        for chunk in self._chunks():
            pending += chunk
            while b"\n\n" in pending:
                block, pending = pending.split(b"\n\n", 1)
                kind, data = "message", b""
                for line in block.split(b"\n"):
                    if line.startswith(b"event:"):
                        kind = line[6:].strip().decode()
                    elif line.startswith(b"data:"):
                        data += line[5:].strip()
                yield kind, orjson.loads(data)

    def start(self) -> SseTail:
        """Reads the rest of the stream on a thread."""

        def run() -> None:
            with contextlib.suppress(OSError, ValueError):
                for event in self._events:
                    self.events.append(event)
            self.ended.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def messages(self) -> list[str]:
        return [r["message"] for kind, data in self.events if kind == "message" for r in data["records"]]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self._thread is not None:
            self._thread.join(10)


def open_tail(server: Server, token: str, q: str = "", **kwargs: Any) -> SseTail:
    """An SSE tail that is listening (its first, empty event read)."""
    tail = SseTail(server.base_url, token, q, **kwargs)
    assert tail.status == 200, tail.body()
    assert tail.headers["content-type"] == "text/event-stream"
    assert tail.read_one() == ("message", {"records": []})
    return tail


class GrpcTail:
    """TailLogs over gRPC, read on a thread (``read=False``: only the first message)."""

    def __init__(self, server: Server, token: str, q: str = "", *, small_window: bool = False) -> None:
        # Without BDP probing the stream's window stays at 64 KB: a client
        # that stops reading stops the server's sends after that.
        options = [("grpc.http2.bdp_probe", 0)] if small_window else []
        self.channel = grpc.insecure_channel(server.grpc_target, options=options)
        stub = logs_pb2_grpc.LogServiceStub(self.channel)
        self.call = stub.TailLogs(logs_pb2.TailLogsRequest(q=q), metadata=[("authorization", f"Bearer {token}")])
        first = next(self.call)
        assert list(first.records) == []
        self.records: list[logs_pb2.LogRecord] = []
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()

    def start(self) -> GrpcTail:
        def run() -> None:
            try:
                for reply in self.call:
                    self.records.extend(reply.records)
            except grpc.RpcError as exc:
                self.error = exc
            self.ended.set()

        threading.Thread(target=run, daemon=True).start()
        return self

    def messages(self) -> list[str]:
        return [r.message for r in self.records]

    def close(self) -> None:
        self.call.cancel()
        self.ended.wait(10)
        self.channel.close()


def ingest(client: httpx.Client, body: Any) -> int:
    r = client.post("/api/v1/logs", content=orjson.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 202, r.text
    return int(r.json()["accepted"])


# ---------------------------------------------------------------- one server (SQLite)


@pytest.fixture(scope="module")
def tail_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("log-tail"), backend="sqlite")
    yield srv
    stop_server(srv)


@pytest.fixture
def persona(tail_server: Server) -> Persona:
    return register(tail_server)


def test_a_filtered_tail_sees_matching_records_only_in_order(tail_server: Server, persona: Persona) -> None:
    q = "level>=warn (service:api OR attr.region:eu-*) -heartbeat"
    sse = open_tail(tail_server, persona.pat, q).start()
    over_grpc = GrpcTail(tail_server, persona.pat, q).start()
    everything = open_tail(tail_server, persona.pat).start()
    try:
        wanted: list[str] = []
        sent = 0
        client = persona.client()
        for n in range(12):
            batch = [
                {"message": f"match {n}a", "level": "error", "service": "api"},
                {"message": f"too quiet {n}", "level": "info", "service": "api"},
                {"message": f"match {n}b", "level": "warn", "attributes": {"region": "eu-west"}},
                {"message": f"elsewhere {n}", "level": "fatal", "service": "db"},
                {"message": f"heartbeat {n}", "level": "error", "service": "api"},
            ]
            wanted += [f"match {n}a", f"match {n}b"]
            sent += ingest(client, batch)
        # Another org's records never reach this org's tails.
        with register(tail_server).client() as other:
            ingest(other, [{"message": "match other org", "level": "error", "service": "api"}])
        wait_for(lambda: len(everything.messages()) >= sent, "the unfiltered tail")
        wait_for(lambda: len(sse.messages()) >= len(wanted) and len(over_grpc.messages()) >= len(wanted), "the tails")
        assert sse.messages() == wanted
        assert over_grpc.messages() == wanted
        assert len(everything.messages()) == sent
        assert "match other org" not in everything.messages()
        shown = next(r for kind, data in sse.events if kind == "message" for r in data["records"])
        assert {"id", "timestamp", "level", "message", "service"} <= set(shown)
        assert (shown["level"], shown["service"]) == ("error", "api")
    finally:
        client.close()
        for tail in (sse, over_grpc, everything):
            tail.close()


def test_a_bad_tail_query_is_400_naming_the_position(tail_server: Server, persona: Persona) -> None:
    tail = SseTail(tail_server.base_url, persona.pat, "service:api AND (level>=warn")
    try:
        assert tail.status == 400
        body = tail.body()
        assert body["code"] == "VALIDATION_FAILED"
        assert [(f["path"], f["code"]) for f in body["fields"]] == [("q", "invalid_string")]
        assert "at position" in body["fields"][0]["message"]
    finally:
        tail.close()
    with grpc.insecure_channel(tail_server.grpc_target) as channel:
        call = logs_pb2_grpc.LogServiceStub(channel).TailLogs(
            logs_pb2.TailLogsRequest(q="level>=loud"), metadata=[("authorization", f"Bearer {persona.pat}")]
        )
        with pytest.raises(grpc.RpcError) as refused:
            next(call)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at position" in str(refused.value.details())


def test_a_client_that_never_reads_is_dropped_and_ingest_carries_on(tail_server: Server, persona: Persona) -> None:
    """Two tails stop reading after "listening" (SSE with a small socket
    buffer, gRPC with a small window) while 90 requests are ingested: the
    first 30 large ones fill what the sockets can hold, the 12,000 records
    of the rest overflow the tails' queues (10,000 records). Every request
    is accepted, a tail that reads sees every record in order, and the stuck
    ones, read again, end with UNAVAILABLE having missed the rest."""
    stuck_sse = open_tail(tail_server, persona.pat, receive_buffer=4096)
    stuck_grpc = GrpcTail(tail_server, persona.pat, small_window=True)
    reading = open_tail(tail_server, persona.pat).start()
    try:
        sent: list[str] = []
        with persona.client() as client:
            for n in range(90):
                padding = " " + "p" * 50_000 if n < 30 else ""
                batch = [{"message": f"burst {n} {k}{padding}"} for k in range(4 if n < 30 else 200)]
                ingest(client, batch)
                sent += [x["message"] for x in batch]
        wait_for(lambda: len(reading.messages()) >= len(sent), "the reading tail", timeout=30)
        assert reading.messages() == sent
        assert not reading.ended.is_set()

        stuck_sse.start()
        stuck_grpc.start()
        assert stuck_sse.ended.wait(30), "the stuck SSE tail was never dropped"
        assert stuck_grpc.ended.wait(30), "the stuck gRPC tail was never dropped"
        kind, data = stuck_sse.events[-1]
        assert (kind, data["code"]) == ("error", "UNAVAILABLE")
        assert 0 < len(stuck_sse.messages()) < len(sent)
        assert stuck_grpc.error is not None
        assert stuck_grpc.error.code() == grpc.StatusCode.UNAVAILABLE
        assert 0 < len(stuck_grpc.messages()) < len(sent)
        for got in (stuck_sse.messages(), stuck_grpc.messages()):  # what came, came in order
            assert got == sorted(got, key=sent.index)
        # The server still serves: a new tail listens and hears the next record.
        again = open_tail(tail_server, persona.pat).start()
        try:
            with persona.client() as client:
                ingest(client, {"message": "after the drop"})
            wait_for(lambda: again.messages() == ["after the drop"], "a new tail")
        finally:
            again.close()
    finally:
        for tail in (stuck_sse, stuck_grpc, reading):
            tail.close()


def test_an_org_has_at_most_20_live_tails(tail_server: Server, persona: Persona) -> None:
    """The 21st tail of an org is 429 RATE_LIMITED, over SSE and gRPC alike;
    another org still opens its own."""
    tails = [open_tail(tail_server, persona.pat) for _ in range(20)]
    try:
        refused = SseTail(tail_server.base_url, persona.pat)
        try:
            assert refused.status == 429
            assert "retry-after" in refused.headers
            body = refused.body()
            assert body["code"] == "RATE_LIMITED"
            assert "too many live tails" in body["error"]
        finally:
            refused.close()
        with pytest.raises(grpc.RpcError) as caught:
            GrpcTail(tail_server, persona.pat)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many live tails" in str(caught.value.details())
        other = register(tail_server)
        open_tail(tail_server, other.pat).close()
    finally:
        for tail in tails:
            tail.close()


# ---------------------------------------------------------------- the broker in-process


def _rows(org_id: int, messages: list[str], *, at: datetime | None = None) -> list[Row]:
    moment = at or datetime.now(UTC)
    return [
        Row(n + 1, org_id, record_of(moment, moment, 9, "", message, "api", None, None, {"n": n}, {}))
        for n, message in enumerate(messages)
    ]


def test_the_broker_caps_tails_bounds_queues_by_records_and_keeps_orgs_apart() -> None:
    """TailBroker without Redis, as a server without Redis runs it: 200 live
    tails in a process at most (the next is 429, one closing makes room); a
    tail's queue holds 10,000 records (a larger batch only when nothing
    waits); records of an org reach only that org's tails."""

    async def run() -> None:
        broker = TailBroker(None)
        streams: list[AsyncGenerator[list[StoredRecord], None]] = []
        try:
            for n in range(MAX_TAILS):
                stream = broker.subscribe(n // MAX_TAILS_PER_ORG, compile_matcher(parse("disk")))
                assert await anext(stream) == []
                streams.append(stream)
            for org_id in (0, 10_000):  # an org at its cap; an org with no tail, in a full process
                with pytest.raises(ObserveError) as caught:
                    await anext(broker.subscribe(org_id, compile_matcher(None)))
                assert caught.value.code == ErrorCode.ERROR_CODE_RATE_LIMITED
                assert "too many live tails" in caught.value.message
            await streams.pop().aclose()  # org 9's last
            assert broker.tail_count == MAX_TAILS - 1

            # Org 9 has room again: a tail listening to every record.
            everything = broker.subscribe(9, compile_matcher(None))
            assert await anext(everything) == []
            big = [f"disk full {n}" for n in range(QUEUE_RECORDS + 5000)]
            broker.publish(_rows(9, big) + _rows(3, ["disk of org 3"]))
            got = await anext(everything)  # larger than the bound, but nothing else waited
            assert [r.record.message for r in got] == big
            assert len(await anext(streams[9 * MAX_TAILS_PER_ORG])) == len(big)
            assert [r.record.message for r in await anext(streams[3 * MAX_TAILS_PER_ORG])] == ["disk of org 3"]

            # Org 9's tails do not read: past 10,000 waiting records each is dropped.
            broker.publish(_rows(9, ["disk a"] * 6000))
            broker.publish(_rows(9, ["disk b"] * 5000))
            assert broker.tail_count == MAX_TAILS - MAX_TAILS_PER_ORG
            assert broker.dropped_tails == MAX_TAILS_PER_ORG
            with pytest.raises(ObserveError) as caught:
                await anext(everything)  # what waited is gone with it
            assert caught.value.code == ErrorCode.ERROR_CODE_UNAVAILABLE
            assert "fell behind" in caught.value.message
            # The other orgs' tails heard nothing of org 9.
            broker.publish(_rows(0, ["disk at last"]))
            assert [r.record.message for r in await anext(streams[0])] == ["disk at last"]
        finally:
            for stream in streams:
                await stream.aclose()
            await broker.close()

    asyncio.run(run())


@pytest.mark.skipif(not REDIS_URL, reason="needs OBSERVE_TEST_REDIS_URL")
def test_through_redis_a_bad_message_is_skipped_and_the_end_of_time_survives() -> None:
    """Records go over Redis with exact microseconds, so one stamped at the
    end of time (9999-12-31T23:59:59.999999Z) arrives equal; a message on the
    channel that is not a batch is skipped and the subscription carries on
    (the next record arrives)."""

    async def run() -> None:
        assert REDIS_URL
        broker = TailBroker(REDIS_URL, prefix=f"test-tail-{uuid.uuid4().hex}")
        assert broker.redis is not None
        stream = broker.subscribe(1, compile_matcher(None))
        try:
            assert await anext(stream) == []
            end_of_time = datetime.max.replace(tzinfo=UTC)
            sent = _rows(1, ["at the end of time"], at=end_of_time)
            await broker.redis.publish(broker.channel, b"not a batch")
            await broker.redis.publish(broker.channel, b"[[1, 2]]")
            broker.publish(sent)
            got = await asyncio.wait_for(anext(stream), 5)
            assert [(r.id, r.org_id, r.record) for r in got] == [(row.id, row.org_id, row.record) for row in sent]
            assert got[0].record.timestamp == end_of_time
        finally:
            await stream.aclose()
            await broker.close()

    asyncio.run(run())


# ---------------------------------------------------------------- two servers (PostgreSQL + Redis)


@pytest.mark.slow
@pytest.mark.skipif(
    not (PG_URL and REDIS_URL), reason="needs OBSERVE_TEST_DATABASE_URL and OBSERVE_TEST_REDIS_URL (CI sets them)"
)
def test_tails_on_one_server_see_records_ingested_by_another(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    assert REDIS_URL
    env = {"OBSERVE_REDIS_URL": REDIS_URL}
    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(start_server, tmp_path / name, backend="postgresql", extra_env=env) for name in "ab"]
        servers = [future.result() for future in started]
    a, b = servers
    try:
        persona = register(a)
        sse = open_tail(a, persona.pat, "service:api").start()
        over_grpc = GrpcTail(a, persona.pat, "service:api").start()
        local_on_b = open_tail(b, persona.pat, "service:api").start()
        try:
            wanted: list[str] = []
            tails: list[SseTail | GrpcTail] = [sse, over_grpc, local_on_b]
            with a.client(persona.pat) as on_a, b.client(persona.pat) as on_b:
                # One at a time: across instances the order is the order of arrival, which the next record waits for.
                for n in range(6):
                    body = [{"message": f"from {n}", "service": "api"}, {"message": "db"}]
                    ingest(on_b if n % 2 == 0 else on_a, body)
                    wanted.append(f"from {n}")
                    wait_for(lambda: all(len(t.messages()) >= len(wanted) for t in tails), "the tails", timeout=10)
            assert [t.messages() for t in tails] == [wanted] * 3
        finally:
            for tail in (sse, over_grpc, local_on_b):
                tail.close()
    finally:
        for srv in servers:
            stop_server(srv)
