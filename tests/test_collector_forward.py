"""The Fluent forward input against real senders: `fluent-logger` and hand-built msgpack on a socket.

The receiver runs in its own event loop thread on a free localhost port, as the collector runs it;
the sink records what it was handed and, when gated, waits for the test to let it finish.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from fluent.sender import EventTime, FluentSender  # type: ignore[import-untyped]
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber

from collector.config import ForwardInput, Listen
from collector.forward import DEFAULT_MAX_MESSAGE_BYTES, ForwardReceiver, to_otlp
from tests.polling import wait_for

SHARED_KEY = "forward-secret"


@dataclass
class Running:
    receiver: ForwardReceiver
    port: int
    loop: asyncio.AbstractEventLoop
    gate: asyncio.Event
    records: list[LogRecord] = field(default_factory=list)

    def open_gate(self) -> None:
        self.loop.call_soon_threadsafe(self.gate.set)

    def connect(self) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return client


@contextmanager
def forward_input(
    *, shared_key: str | None = None, gated: bool = False, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    gate = asyncio.Event()
    if not gated:
        gate.set()
    records: list[LogRecord] = []

    async def sink(batch: list[LogRecord]) -> None:
        await gate.wait()
        if any(record.body.string_value == "disk full" for record in batch):
            raise OSError("the buffer could not append")
        records.extend(batch)

    config = ForwardInput(listen=Listen(scheme="tcp", host="127.0.0.1", port=0), tag="apps", shared_key=shared_key)
    receiver = ForwardReceiver(config, sink, max_message_bytes=max_message_bytes, hostname="collector-1")
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(5)
    try:
        yield Running(receiver, server.sockets[0].getsockname()[1], loop, gate, records)
    finally:

        async def shut_down() -> None:
            server.close()
            # The clients are closed by now: each handler sees EOF and ends on its own.
            handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            if handlers:
                await asyncio.wait(handlers, timeout=5)

        asyncio.run_coroutine_threadsafe(shut_down(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def plain(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {pair.key: plain(pair.value) for pair in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def attributes(record: LogRecord) -> dict[str, object]:
    return {pair.key: plain(pair.value) for pair in record.attributes}


def receive(client: socket.socket, timeout: float = 5) -> Any:
    """The next msgpack object from `client`; None when the server closed the connection."""
    client.settimeout(timeout)
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        for message in unpacker:
            return message
        data = client.recv(65536)
        if not data:
            return None
        unpacker.feed(data)


def test_fluent_logger_message_mode_maps_body_severity_attributes_and_event_time() -> None:
    with forward_input() as running:
        sender = FluentSender("app", host="127.0.0.1", port=running.port)
        assert sender.emit_with_time(
            "web",
            1_700_000_000,
            {"message": "hello", "level": "WARNING", "user": "ann", "n": 3, "huge": 2**64 - 1, "ctx": {"ids": [1, 2]}},
        ), sender.last_error
        assert sender.emit("map", {"a": 1, "b": None}), sender.last_error
        sender.close()
        precise = FluentSender("app", host="127.0.0.1", port=running.port, nanosecond_precision=True)
        assert precise.emit_with_time("ns", EventTime(1_700_000_001, 123_456_789), {"log": "ns line"})
        assert precise.emit("now", {"log": "now line", "severity": "fatal"})
        precise.close()
        wait_for(lambda: len(running.records) == 4, "four records")

    web, mapped, ns, now = running.records
    assert web.body.string_value == "hello"
    assert web.time_unix_nano == 1_700_000_000 * 10**9
    assert (web.severity_number, web.severity_text) == (SeverityNumber.SEVERITY_NUMBER_WARN, "WARNING")
    assert attributes(web) == {
        "user": "ann",
        "n": 3,
        "huge": str(2**64 - 1),
        "ctx": {"ids": [1, 2]},
        "fluent.tag": "app.web",
        "observe.source": "apps",
        "network.peer.address": "127.0.0.1",
    }
    assert web.observed_time_unix_nano > web.time_unix_nano

    assert plain(mapped.body) == {"a": 1, "b": None}
    assert mapped.severity_number == SeverityNumber.SEVERITY_NUMBER_UNSPECIFIED
    assert attributes(mapped)["fluent.tag"] == "app.map"
    assert "a" not in attributes(mapped)
    assert mapped.time_unix_nano % 10**9 == 0  # fluent-logger's default: whole seconds
    assert mapped.time_unix_nano > 1_700_000_000 * 10**9

    assert (ns.body.string_value, ns.time_unix_nano) == ("ns line", 1_700_000_001_123_456_789)
    assert now.severity_number == SeverityNumber.SEVERITY_NUMBER_FATAL
    assert now.time_unix_nano > 1_700_000_000 * 10**9
    assert running.receiver.counters.received == 4
    request = to_otlp(running.records)
    assert len(request.resource_logs[0].scope_logs[0].log_records) == 4
    assert request.resource_logs[0].scope_logs[0].scope.name == "observe.collector.forward"


def entries(*items: tuple[int, dict[str, Any]]) -> bytes:
    return b"".join(msgpack.packb([stamp, record]) for stamp, record in items)


def test_forward_packed_and_compressed_modes_are_acked_only_after_the_sink_completed() -> None:
    event_time = msgpack.ExtType(0, (1_700_000_002).to_bytes(4, "big") + (5).to_bytes(4, "big"))
    with forward_input(gated=True) as running, running.connect() as client:
        forward = [[1_700_000_000, {"message": "one"}], [event_time, {"message": "two"}]]
        client.sendall(msgpack.packb(["fwd", forward, {"chunk": "c1"}]))
        with pytest.raises(TimeoutError):
            receive(client, timeout=0.3)  # the sink has not completed: no ack yet
        assert running.records == []
        running.open_gate()
        assert receive(client) == {"ack": "c1"}
        assert [record.body.string_value for record in running.records] == ["one", "two"]
        assert running.records[1].time_unix_nano == 1_700_000_002_000_000_005

        packed = entries((1_700_000_003, {"message": "three"}), (1_700_000_004, {"message": "four"}))
        client.sendall(msgpack.packb(["packed", packed, {"chunk": "c2", "size": 2}]))
        assert receive(client) == {"ack": "c2"}
        # Two gzip members, as Fluent Bit appends them; Fluent Bit ≥ 2.1's [[time, metadata], record] too.
        members = gzip.compress(entries((1_700_000_005, {"message": "five"}))) + gzip.compress(
            msgpack.packb([[event_time, {}], {"message": "six"}])
        )
        client.sendall(msgpack.packb(["gz", members, {"chunk": "c3", "compressed": "gzip", "size": 2}]))
        assert receive(client) == {"ack": "c3"}
        client.sendall(msgpack.packb(["plain", 1_700_000_006, {"message": "seven"}]))  # no chunk: no ack
        wait_for(lambda: len(running.records) == 7, "seven records")

    assert [record.body.string_value for record in running.records[2:]] == ["three", "four", "five", "six", "seven"]
    assert [attributes(record)["fluent.tag"] for record in running.records] == ["fwd"] * 2 + ["packed"] * 2 + [
        "gz"
    ] * 2 + ["plain"]
    assert running.records[5].time_unix_nano == 1_700_000_002_000_000_005
    assert running.receiver.counters.acked_chunks == 3
    assert running.receiver.counters.malformed == 0


def handshake(client: socket.socket, shared_key: str) -> tuple[list[Any], bytes, bytes]:
    """The client's side of HELO/PING/PONG; returns the PONG, the nonce and the salt."""
    client.settimeout(5)
    unpacker = msgpack.Unpacker(raw=True)
    while (helo := next(unpacker, None)) is None:
        unpacker.feed(client.recv(65536))
    assert helo[0] == b"HELO"
    assert (helo[1][b"auth"], helo[1][b"keepalive"]) == (b"", True)
    nonce, salt = helo[1][b"nonce"], b"0123456789abcdef"
    digest = hashlib.sha512(salt + b"sender-1" + nonce + shared_key.encode()).hexdigest()
    client.sendall(msgpack.packb(["PING", "sender-1", salt, digest, "", ""]))
    return receive(client), nonce, salt


def test_shared_key_handshake_admits_the_right_key_and_closes_on_a_wrong_one() -> None:
    with forward_input(shared_key=SHARED_KEY) as running:
        with running.connect() as client:
            pong, nonce, salt = handshake(client, SHARED_KEY)
            expected = hashlib.sha512(salt + b"collector-1" + nonce + SHARED_KEY.encode()).hexdigest()
            assert pong == ["PONG", True, "", "collector-1", expected]
            client.sendall(msgpack.packb(["in", 1_700_000_000, {"message": "authenticated"}, {"chunk": "k1"}]))
            assert receive(client) == {"ack": "k1"}

        with running.connect() as client:
            pong, _, _ = handshake(client, "not-the-key")
            assert pong[:2] == ["PONG", False]
            assert SHARED_KEY not in repr(pong)
            assert receive(client) is None

        with running.connect() as client:  # data without the handshake is not a PING
            receive(client)  # HELO
            client.sendall(msgpack.packb(["in", 1_700_000_000, {"message": "sneaky"}]))
            assert receive(client) is None

    assert [record.body.string_value for record in running.records] == ["authenticated"]
    counters = running.receiver.counters
    assert (counters.auth_failed, counters.malformed, counters.received) == (1, 1, 1)


@pytest.mark.parametrize(
    ("payload", "counter"),
    [
        (b"\xc1", "malformed"),  # a byte msgpack never uses
        (msgpack.packb([1, 2, 3]), "malformed"),  # not [tag, ...]
        (msgpack.packb(["t", 1, "not a map"]), "malformed"),
        (msgpack.packb(["t", b"\x1f\x8b junk", {"compressed": "gzip"}]), "malformed"),
        (msgpack.packb(["t", msgpack.packb([1, {}])[:-1]]), "malformed"),  # a packed entry cut short
        (msgpack.packb(["t", 1, {"message": "x" * 8192}]), "oversized"),
        (msgpack.packb(["t", gzip.compress(entries((1, {"message": "y" * 8192})))]), "malformed"),
        (msgpack.packb(["t", gzip.compress(entries((1, {"m": "y" * 8192}))), {"compressed": "gzip"}]), "oversized"),
    ],
)
def test_bad_input_is_counted_and_closes_only_its_connection(payload: bytes, counter: str) -> None:
    with forward_input(max_message_bytes=4096) as running, running.connect() as good:
        with running.connect() as bad:
            bad.sendall(payload)
            assert receive(bad) is None
        good.sendall(msgpack.packb(["t", 1_700_000_000, {"message": "still served"}, {"chunk": "g"}]))
        assert receive(good) == {"ack": "g"}
        counters = running.receiver.counters
        assert (counters.malformed, counters.oversized) == ((1, 0) if counter == "malformed" else (0, 1))
        assert [record.body.string_value for record in running.records] == ["still served"]


def test_a_failing_sink_gets_no_ack_and_the_connection_closes() -> None:
    with forward_input() as running, running.connect() as client:
        client.sendall(msgpack.packb(["t", 1_700_000_000, {"message": "disk full"}, {"chunk": "lost"}]))
        assert receive(client) is None  # the sender keeps the chunk and sends it again
        assert running.receiver.counters.acked_chunks == 0


@pytest.mark.parametrize("stamp", [-5, 2**62, float("inf"), float("nan"), -1.5, 0])
def test_a_time_otlp_cannot_carry_is_left_unset_not_a_failed_chunk(stamp: object) -> None:
    from collector.forward import decode_entry, to_log_record

    record = to_log_record(decode_entry([stamp, {"message": "odd time"}]), tag="t", source_tag="s", peer=None)
    assert record.time_unix_nano == 0
    assert record.observed_time_unix_nano > 0
    assert to_otlp([record]).SerializeToString()
