"""Nothing acknowledged is lost: the server stopped for 30 s under a steady stream, and the collector
killed with SIGKILL twice (once while the server is down, once while it ships the backlog).

A Fluent forward client sends a chunk of records every 20 ms and waits for the chunk's ack (the
forward protocol's ``chunk`` option, as Fluent Bit's ``require_ack_response``); a chunk counts as
acknowledged only when its ack arrived. The collector acks a chunk once it is in the on-disk buffer.
Afterwards every acknowledged record must be searchable on the server; records that arrived twice
(a request shipped but not yet marked done when the collector was killed) must be no more than the
collector counted in ``observe_collector_resent_records``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgpack  # type: ignore[import-untyped]
import pytest

from tests.background import BackgroundRun, run_beside
from tests.conftest import ROOT, Persona, Server, free_port, register, start_server, stop_server, wait_ready
from tests.test_collector_agent import metric, wait_healthy

OUTAGE_SEC = 30.0
CHUNK_RECORDS = 5
CHUNK_EVERY_SEC = 0.02
MAX_BACKOFF_SEC = 30  # the shipper's longest wait between retries (collector/shipper.py Backoff)


class ForwardStream(threading.Thread):
    """Sends chunks with acks until stopped, reconnecting whenever the collector goes away."""

    def __init__(self, port: int, marker: str) -> None:
        super().__init__(daemon=True)
        self.port, self.marker = port, marker
        self.acked: set[int] = set()
        self.sent = 0
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        next_id = 0
        while not self.stopping.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=3) as sock:
                    unpacker = msgpack.Unpacker()
                    while not self.stopping.is_set():
                        ids = list(range(next_id, next_id + CHUNK_RECORDS))
                        next_id += CHUNK_RECORDS
                        chunk = uuid.uuid4().hex
                        entries = [[int(time.time()), {"message": f"out{self.marker} n{i}", "n": i}] for i in ids]
                        sock.sendall(msgpack.packb(["outage", entries, {"chunk": chunk}]))
                        self.sent += len(ids)
                        if self._ack(sock, unpacker) == chunk:
                            self.acked.update(ids)
                        time.sleep(CHUNK_EVERY_SEC)
            except OSError:
                self.failures += 1
                time.sleep(0.05)

    @staticmethod
    def _ack(sock: socket.socket, unpacker: msgpack.Unpacker) -> str | None:
        while True:
            for reply in unpacker:
                return str(reply.get("ack")) if isinstance(reply, dict) else None
            data = sock.recv(4096)
            if not data:
                raise ConnectionResetError("closed before the ack")
            unpacker.feed(data)


class CollectorProcess:
    def __init__(self, config: Path, metrics_port: int) -> None:
        self.config = config
        self.metrics_url = f"http://127.0.0.1:{metrics_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.resent = 0.0  # summed over the processes that were killed

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collector", "--config", str(self.config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_healthy(self.process, self.metrics_url)

    def metrics(self) -> str:
        return httpx.get(self.metrics_url + "/metrics", timeout=5).text

    def kill(self) -> None:
        assert self.process is not None
        self.resent += metric(self.metrics(), "observe_collector_resent_records", "fluent")
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def restart_server(server: Server) -> None:
    """The same server (same data, ports and settings) started again."""
    server.process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--role", "api"],
        cwd=ROOT,
        env=server.env,
        stdout=server.log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_ready(server)


def found_numbers(owner: Persona, run: str) -> list[int]:
    numbers: list[int] = []
    cursor = ""
    with owner.client() as client:
        while True:
            params: dict[str, str | int] = {"q": f"out{run}", "limit": 1000, **({"cursor": cursor} if cursor else {})}
            reply = client.get("/api/v1/logs/search", params=params)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            numbers.extend(int(record["attributes"]["n"]) for record in body["records"])
            cursor = body.get("nextCursor", "")
            if not cursor:
                return numbers


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture(scope="session")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundRun]:
    yield from run_beside(tmp_path_factory, "collector-outage", outage_and_two_sigkills)


@pytest.mark.slow
@pytest.mark.background_start
def test_the_outage_run_starts(outage: BackgroundRun) -> None:
    assert outage.is_alive() or outage.error is None


@pytest.mark.slow
@pytest.mark.background_finish
def test_a_30_s_outage_and_two_sigkills_lose_nothing_acknowledged(outage: BackgroundRun) -> None:
    print(outage.result(timeout=180))


def outage_and_two_sigkills(tmp_path: Path) -> str:
    server = start_server(tmp_path / "server", backend="sqlite")
    collector: CollectorProcess | None = None
    stream: ForwardStream | None = None
    try:
        owner = register(server)
        token = owner.mint(name="collector", scopes=["logs:write"])["token"]
        forward_port, metrics_port = free_port(), free_port()
        config = tmp_path / "collector.toml"
        config.write_text(
            f"""
[server]
endpoint = "{server.base_url}/api/v1/otlp"
token = "{token}"
timeout_sec = 2
[buffer]
dir = "{tmp_path / "buffer"}"
[batch]
max_delay_ms = 50
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[inputs]]
type = "forward"
listen = "tcp://127.0.0.1:{forward_port}"
tag = "fluent"
"""
        )
        collector = CollectorProcess(config, metrics_port)
        collector.start()
        run = uuid.uuid4().hex[:10]
        stream = ForwardStream(forward_port, run)
        stream.start()
        wait_until(lambda: len(stream.acked) >= 200, 10, "the stream started")

        stop_server(server)
        outage_started = time.monotonic()
        time.sleep(OUTAGE_SEC / 2)
        assert metric(collector.metrics(), "observe_collector_retried", "fluent") > 0
        collector.kill()  # with the server down: the request being retried stays buffered
        collector.start()
        time.sleep(max(0.0, OUTAGE_SEC - (time.monotonic() - outage_started)))
        acked_in_outage = len(stream.acked)
        restart_server(server)

        # Kill the collector again while it ships the backlog.
        wait_until(
            lambda: metric(collector.metrics(), "observe_collector_shipped_records", "fluent") > 0,
            MAX_BACKOFF_SEC + 5,
            "shipping resumed",
        )
        collector.kill()
        collector.start()
        time.sleep(1)
        stream.stopping.set()
        stream.join(timeout=10)
        acked = set(stream.acked)
        assert len(acked) > acked_in_outage > 1000, (len(acked), acked_in_outage)

        wait_until(
            lambda: metric(collector.metrics(), "observe_collector_buffer_records") == 0,
            60,
            "the backlog was shipped",
        )
        numbers = found_numbers(owner, run)
        missing = acked - set(numbers)
        assert not missing, f"{len(missing)} acknowledged records missing, e.g. {sorted(missing)[:10]}"
        duplicates = len(numbers) - len(set(numbers))
        collector.resent += metric(collector.metrics(), "observe_collector_resent_records", "fluent")
        assert duplicates <= collector.resent, (duplicates, collector.resent)
        return (
            f"sent {stream.sent}, acknowledged {len(acked)}, found {len(numbers)} "
            f"({duplicates} duplicates; the collector counted {collector.resent:.0f} records resent), "
            f"{stream.failures} reconnects"
        )
    finally:
        if stream is not None:
            stream.stopping.set()
        if collector is not None and collector.process is not None and collector.process.poll() is None:
            collector.process.terminate()
            collector.process.wait(timeout=15)
        stop_server(server)
