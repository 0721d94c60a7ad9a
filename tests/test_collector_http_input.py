"""The http input against the bodies Fluent Bit's ``http`` output sends, over real HTTP.

The receiver runs in its own event loop thread on a free localhost port, as the collector runs it;
the sink records what it was handed, and raises for a record whose body is ``disk full``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgpack  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber

from collector.config import HttpInput, Listen
from collector.http_input import SCOPE_NAME, HttpCounters, HttpReceiver, encode
from tests.conftest import ROOT, SQLITE_ONLY, Server, free_port, register
from tests.test_collector_agent import metric, wait_for_records, wait_healthy
from tests.test_collector_forward import attributes

MAX_BODY = 64 * 1024


@dataclass
class Running:
    url: str
    port: int
    counters: HttpCounters
    records: list[LogRecord] = field(default_factory=list)


@contextmanager
def http_input() -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    records: list[LogRecord] = []

    async def sink(batch: list[LogRecord]) -> None:
        if any(record.body.string_value == "disk full" for record in batch):
            raise OSError("the buffer could not append")
        records.extend(batch)

    config = HttpInput(listen=Listen(scheme="tcp", host="127.0.0.1", port=0), tag="bits", max_body_bytes=MAX_BODY)
    counters = HttpCounters()
    receiver = HttpReceiver(config, sink, counters=counters)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(5)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Running(f"http://127.0.0.1:{port}", port, counters, records)
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


def event_time(seconds: int, nanoseconds: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", seconds, nanoseconds))


def test_fluent_bit_json_json_lines_msgpack_and_gzip_bodies_are_mapped_on_one_keep_alive_connection() -> None:
    json_body = json.dumps(
        [
            {"date": 1700000000.25, "log": "json line", "level": "error", "pod": "web-1"},
            {"date": "2023-11-14T22:13:21.500000Z", "message": "iso line", "n": 2},
        ]
    )
    lines_body = '{"date":1700000002.0,"log":"line one"}\n{"date":1700000003.0,"log":"line two","x":{"y":[1,2]}}\n'
    lines_body += '{"date":1700000007250,"log":"epoch_ms"}\n'
    msgpack_body = msgpack.packb(
        [event_time(1_700_000_004, 123_456_789), {"log": "ext time", "stream": "stdout"}], use_bin_type=True
    ) + msgpack.packb([[1_700_000_005, {}], {"message": "metadata pair"}], use_bin_type=True)
    with http_input() as running, httpx.Client(base_url=running.url, timeout=5) as client:
        assert client.post("/", content=json_body, headers={"Content-Type": "application/json"}).status_code == 201
        assert (
            client.post("/k8s.web", content=lines_body, headers={"Content-Type": "application/json"}).status_code == 201
        )
        response = client.post(
            "/ignored", content=msgpack_body, headers={"Content-Type": "application/msgpack", "FLUENT-TAG": "mp.tag"}
        )
        assert response.status_code == 201
        compressed = gzip.compress(b'{"date":1700000006,"log":"gzipped"}')
        assert (
            client.post(
                "/gz", content=compressed, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
            ).status_code
            == 201
        )
        # The records were handed over before each answer, so nothing to wait for.
        records = list(running.records)
    assert running.counters.received == 8

    json_one, iso, line_one, line_two, millis, ext, pair, zipped = records
    assert json_one.body.string_value == "json line"
    assert json_one.time_unix_nano == 1_700_000_000_250_000_000
    assert (json_one.severity_number, json_one.severity_text) == (SeverityNumber.SEVERITY_NUMBER_ERROR, "error")
    assert attributes(json_one) == {
        "pod": "web-1",
        "fluent.tag": "bits",
        "observe.source": "bits",
        "network.peer.address": "127.0.0.1",
    }
    assert iso.body.string_value == "iso line"
    assert iso.time_unix_nano == 1_700_000_001_500_000_000
    assert attributes(iso)["n"] == 2
    assert "date" not in attributes(iso)
    assert [line_one.body.string_value, line_two.body.string_value] == ["line one", "line two"]
    assert line_two.time_unix_nano == 1_700_000_003 * 10**9
    assert attributes(line_two)["x"] == {"y": [1, 2]}
    assert attributes(line_two)["fluent.tag"] == "k8s.web"
    assert millis.time_unix_nano == 1_700_000_007_250_000_000
    assert ext.body.string_value == "ext time"
    assert ext.time_unix_nano == 1_700_000_004_123_456_789
    assert attributes(ext)["stream"] == "stdout"
    assert attributes(ext)["fluent.tag"] == "mp.tag"
    assert pair.body.string_value == "metadata pair"
    assert pair.time_unix_nano == 1_700_000_005 * 10**9
    assert zipped.body.string_value == "gzipped"
    assert zipped.time_unix_nano == 1_700_000_006 * 10**9
    assert attributes(zipped)["fluent.tag"] == "gz"

    request = ExportLogsServiceRequest.FromString(encode(records))
    assert request.resource_logs[0].scope_logs[0].scope.name == SCOPE_NAME
    assert len(request.resource_logs[0].scope_logs[0].log_records) == 8


def test_bad_oversized_and_unstorable_bodies_get_400_413_and_503() -> None:
    json_type = {"Content-Type": "application/json"}
    with http_input() as running, httpx.Client(base_url=running.url, timeout=5) as client:
        for body, headers in (
            (b"{not json", json_type),
            (b'["a string, not a record"]', json_type),
            (b"\xc1", {"Content-Type": "application/msgpack"}),
            (msgpack.packb([1, 2, 3]), {"Content-Type": "application/msgpack"}),
            (msgpack.packb([1, {"log": "cut"}])[:-2], {"Content-Type": "application/msgpack"}),
            (b"not gzip", json_type | {"Content-Encoding": "gzip"}),
        ):
            response = client.post("/", content=body, headers=headers)
            assert response.status_code == 400, (body, response.text)
        assert client.post("/", content=b"x" * (MAX_BODY + 1), headers=json_type).status_code == 413
        bomb = gzip.compress(json.dumps([{"log": "y" * MAX_BODY}]).encode())
        assert len(bomb) < MAX_BODY
        response = client.post("/", content=bomb, headers=json_type | {"Content-Encoding": "gzip"})
        assert response.status_code == 413
        failing = json.dumps([{"log": "kept?"}, {"log": "disk full"}])
        assert client.post("/", content=failing, headers=json_type).status_code == 503
        assert client.get("/").status_code == 405
        assert client.post("/", content=b'{"log":"still serving"}', headers=json_type).status_code == 201
    assert [record.body.string_value for record in running.records] == ["still serving"]
    assert (running.counters.malformed, running.counters.oversized) == (7, 2)


def test_a_request_without_content_length_gets_411_and_a_closed_connection() -> None:
    with http_input() as running, socket.create_connection(("127.0.0.1", running.port), timeout=5) as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        answer = b""
        while chunk := client.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 411 ")
    assert b"Connection: close" in answer


@SQLITE_ONLY
def test_the_agent_ships_fluent_bit_http_posts_to_the_server_and_answers_after_buffering(
    server: Server, tmp_path: Path
) -> None:
    owner = register(server)
    token = owner.mint(name="collector", scopes=["logs:write", "logs:read"])["token"]
    ports = {name: free_port() for name in ("http", "metrics")}
    config = tmp_path / "collector.toml"
    config.write_text(
        f"""
[server]
endpoint = "{server.base_url}/api/v1/otlp"
token = "{token}"

[buffer]
dir = "{tmp_path / "buffer"}"

[batch]
max_delay_ms = 5000

[metrics]
listen = "127.0.0.1:{ports["metrics"]}"

[[inputs]]
type = "http"
listen = "tcp://127.0.0.1:{ports["http"]}"
tag = "fluent-http"
"""
    )
    run = uuid.uuid4().hex[:10]
    metrics_url = f"http://127.0.0.1:{ports['metrics']}"
    process = subprocess.Popen(
        [sys.executable, "-m", "collector", "--config", str(config)], cwd=ROOT, stderr=subprocess.PIPE
    )
    try:
        wait_healthy(process, metrics_url)
        body = json.dumps([{"date": time.time(), "log": f"http{run} line {i}", "level": "warn"} for i in range(3)])
        response = httpx.post(
            f"http://127.0.0.1:{ports['http']}/app.web",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
        assert response.status_code == 201
        # Answered well before max_delay_ms: the sink flushed the batch into the buffer first.
        text = httpx.get(metrics_url + "/metrics", timeout=5).text
        assert metric(text, "observe_collector_buffered_records", "fluent-http") == 3
        assert metric(text, "observe_collector_received_records", "fluent-http") == 3
        records = wait_for_records(owner, f"http{run}", 3)
        assert sorted(str(r["message"]) for r in records) == [f"http{run} line {i}" for i in range(3)]
        assert records[0]["level"] == "warn"
        assert records[0]["attributes"]["fluent.tag"] == "app.web"  # type: ignore[index]
        assert records[0]["attributes"]["observe.source"] == "fluent-http"  # type: ignore[index]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
