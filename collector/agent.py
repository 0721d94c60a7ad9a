"""The collector process: inputs → batches → the on-disk buffer → the shipper → the server.

``Agent(config)`` wires the parts of ``collector/``. Decisions:

- Every input has its own `Batcher`: records collect until ``batch.max_records`` or
  ``batch.max_bytes`` (the input's own frame/record sizes, an estimate of the OTLP size) or until
  ``batch.max_delay_ms`` after the first one, then become one serialized
  ``ExportLogsServiceRequest`` appended to the `DiskBuffer` (blocking calls run in a thread). A
  batch larger than the limits is split, so one buffer record is one shippable request.
- Acknowledgements follow durability: the forward input's sink flushes its chunk into the buffer
  before it returns (forward acks the chunk after that); a syslog TCP/TLS connection is not read
  further while two full batches of it are being appended (back-pressure, as TCP syslog has no acks).
  UDP has neither: a datagram is batched and flushed in the background.
- One shipping loop sends the oldest buffered requests with the `Shipper`, up to
  ``server.concurrency`` at once (the shipper retries retryable failures with backoff until
  success, a permanent failure or stop), and acks them in order, on success or on a permanent
  failure (dropped, counted): a request leaves the buffer only with every older one. A stop while
  retrying leaves the requests in the buffer for the next start: at-least-once.
- Drain on SIGTERM/SIGINT: inputs stop listening, pending batches are flushed into the buffer,
  the shipping loop gets ``drain_sec`` to empty it, then the shipper is stopped and the buffer
  closed. Whatever was not shipped stays on disk.
- A buffer record is the input's tag and the record count in front of the serialized request
  (`stored_request`), so shipping, retries and drops are counted per input.
- Duplicates are counted: before sending requests the loop marks the last of them in the buffer
  (``mark_shipping``); after a restart the requests that were in flight when the process died are
  shipped again and their records counted in ``resent_records`` (at most ``concurrency`` requests).
- ``/metrics`` and ``/health``: `collector.metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from collector import forward, http_input, syslog, syslog_otlp
from collector.buffer import DiskBuffer, Position
from collector.config import BatchConfig, CollectorConfig, ForwardInput, HttpInput, InputConfig, SyslogInput
from collector.metrics import InputCounters, http_handler, registry_for
from collector.shipper import Outcome, Result, Shipper

log = logging.getLogger("collector")

T = TypeVar("T")
IDLE_POLL_SEC = 0.5
READ_BYTES = 64 * 1024
GC_THRESHOLD = 50_000
FLUSHES_IN_FLIGHT = 2  # a TCP syslog connection is read on while at most this many of its batches are written


class Batcher(Generic[T]):
    """Collects one input's records and appends them to the buffer as serialized requests."""

    def __init__(
        self,
        batch: BatchConfig,
        encode: Callable[[list[T]], bytes],
        store: Callable[[bytes, int], Awaitable[None]],
    ) -> None:
        self.batch = batch
        self._encode = encode
        self._store = store
        self._items: list[tuple[T, int]] = []
        self._bytes = 0
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def put(self, item: T, size: int) -> bool:
        """Adds a record of about ``size`` bytes; True when the batch is full (the caller flushes)."""
        self._items.append((item, size))
        self._bytes += size
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.batch.max_delay_ms / 1000, self.flush_soon)
        return len(self._items) >= self.batch.max_records or self._bytes >= self.batch.max_bytes

    def flush_soon(self) -> None:
        """Flushes in the background (the timer, UDP); failures are logged, never raised."""
        task = asyncio.get_running_loop().create_task(self._flush_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("cannot append a batch to the buffer")

    async def flush(self) -> None:
        """Appends everything collected so far, split at the batch limits, in arrival order."""
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            items, self._items, self._bytes = self._items, [], 0
            for chunk in self._chunks(items):
                payload = await asyncio.to_thread(self._encode, chunk)
                await self._store(payload, len(chunk))

    async def settle(self, pending: int) -> None:
        """Waits until fewer than ``pending`` background flushes are running (back-pressure that
        still lets the next batch be parsed while the last one is written)."""
        while len(self._tasks) >= pending:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    async def drain(self) -> None:
        """Waits for background flushes, then flushes what is left."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()

    def _chunks(self, items: list[tuple[T, int]]) -> Iterator[list[T]]:
        chunk: list[T] = []
        size = 0
        for item, item_size in items:
            if chunk and (len(chunk) >= self.batch.max_records or size + item_size > self.batch.max_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += item_size
        if chunk:
            yield chunk


@dataclass(slots=True)
class Flight:
    """One request being shipped."""

    position: Position
    stored: bytes
    task: asyncio.Task[Outcome]
    counters: InputCounters
    records: int
    resent: bool

    def count(self, outcome: Outcome) -> None:
        if self.resent:
            self.counters.resent_records += self.records
        if outcome.result is Result.SUCCESS:
            self.counters.shipped_records += outcome.accepted
            self.counters.rejected_records += outcome.rejected
        else:
            self.counters.failed_records += self.records


def stored_request(tag: str, records: int, payload: bytes) -> bytes:
    """A buffer record: the input's tag and the request's record count in front of the request."""
    name = tag.encode()
    return bytes((len(name),)) + name + records.to_bytes(4, "little") + payload


def read_stored_request(stored: bytes) -> tuple[str, int, bytes]:
    """(tag, records, serialized ExportLogsServiceRequest) of a buffer record."""
    end = 1 + stored[0]
    return stored[1:end].decode(errors="replace"), int.from_bytes(stored[end : end + 4], "little"), stored[end + 4 :]


def describe_request(head: bytes) -> tuple[str, int]:
    """A dropped buffer record's input and records, from its first bytes (`DiskBuffer` ``describe``)."""
    tag, records, _ = read_stored_request(head)
    return tag, records


def encode_syslog(messages: list[syslog.SyslogMessage]) -> bytes:
    return syslog_otlp.encode_request(messages)


def encode_forward(records: list[LogRecord]) -> bytes:
    return forward.to_otlp(records).SerializeToString()


def _peer(address: Any) -> str | None:
    return str(address[0]) if isinstance(address, tuple) and address else None


class SyslogListener(asyncio.DatagramProtocol):
    """One syslog input: UDP datagrams (one message each) or TCP/TLS connections (one `Framer` each)."""

    def __init__(self, config: SyslogInput, batcher: Batcher[syslog.SyslogMessage], counters: InputCounters) -> None:
        self.config = config
        self.batcher = batcher
        self.counters = counters

    def _message(self, frame: bytes, peer: str | None, received_at: datetime) -> syslog.SyslogMessage:
        self.counters.received += 1
        return syslog.parse(frame, received_at=received_at, source_tag=self.config.tag, peer=peer)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) > self.config.max_frame_bytes:
            self.counters.oversized += 1
            data = data[: self.config.max_frame_bytes]
        if not data.strip(b"\r\n\x00 "):
            return
        if self.batcher.put(self._message(data, _peer(addr), datetime.now(UTC)), len(data)):
            self.batcher.flush_soon()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer.get_extra_info("peername"))
        framer = syslog.Framer(max_frame_bytes=self.config.max_frame_bytes)
        try:
            while True:
                data = await reader.read(READ_BYTES)
                frames = framer.feed(data) if data else framer.close()
                full = False
                received_at = datetime.now(UTC)  # one read's messages arrived together
                for frame in frames:
                    full = self.batcher.put(self._message(frame, peer, received_at), len(frame)) or full
                if full:
                    self.batcher.flush_soon()
                    await self.batcher.settle(FLUSHES_IN_FLIGHT)
                if not data:
                    break
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.counters.malformed += framer.malformed
            self.counters.oversized += framer.oversized
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


class Agent:
    """The collector: `start`, then `stop` (drain); `run` does both around a stop request."""

    def __init__(self, config: CollectorConfig, *, drain_sec: float = 5.0) -> None:
        self.config = config
        self.drain_sec = drain_sec
        self.buffer: DiskBuffer | None = None
        self.shipper = Shipper(config.server)
        self.registry = registry_for(self)
        self.addresses: dict[str, tuple[str, int]] = {}
        self.metrics_address: tuple[str, int] | None = None
        self._counters: dict[str, InputCounters] = {}
        self._forward: dict[str, forward.ForwardReceiver] = {}
        self._batchers: list[Batcher[Any]] = []
        self._servers: list[asyncio.Server] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._appended = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._shipping: asyncio.Task[None] | None = None
        self._draining = False

    def input_counters(self) -> dict[str, InputCounters]:
        """Per input tag; the forward inputs' own counters folded in."""
        out = dict(self._counters)
        for tag, receiver in self._forward.items():
            own = receiver.counters
            out[tag] = replace(
                self._counters[tag], received=own.received, malformed=own.malformed, oversized=own.oversized
            )
        return out

    async def start(self) -> None:
        self.buffer = await asyncio.to_thread(DiskBuffer.open, self.config.buffer, describe=describe_request)
        for item in self.config.inputs:
            await self._start_input(item)
        metrics = self.config.metrics
        handler = http_handler(self.registry, lambda: self._draining)
        server = await asyncio.start_server(handler, metrics.host, metrics.port)
        self._servers.append(server)
        self.metrics_address = server.sockets[0].getsockname()[:2]
        self._shipping = asyncio.get_running_loop().create_task(self._ship_loop())
        log.info("collector started: %s; metrics on %s", self.addresses, self.metrics_address)

    def _store_for(self, tag: str, counters: InputCounters) -> Callable[[bytes, int], Awaitable[None]]:
        async def store(payload: bytes, records: int) -> None:
            assert self.buffer is not None
            await asyncio.to_thread(self.buffer.append, stored_request(tag, records, payload))
            counters.buffered_records += records
            counters.buffered_bytes += len(payload)
            counters.batches += 1
            self._appended.set()

        return store

    async def _start_input(self, item: InputConfig) -> None:
        counters = self._counters[item.tag] = InputCounters()
        listen = item.listen
        if isinstance(item, SyslogInput):
            syslog_batcher: Batcher[syslog.SyslogMessage] = Batcher(
                self.config.batch, encode_syslog, self._store_for(item.tag, counters)
            )
            self._batchers.append(syslog_batcher)
            listener = SyslogListener(item, syslog_batcher, counters)
            if listen.scheme == "udp":
                loop = asyncio.get_running_loop()
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: listener, local_addr=(listen.host, listen.port)
                )
                self._transports.append(transport)
                self.addresses[item.tag] = transport.get_extra_info("sockname")[:2]
                return
            context = item.tls.server_context() if item.tls else None
            server = await asyncio.start_server(listener.handle, listen.host, listen.port, ssl=context)
        elif isinstance(item, ForwardInput | HttpInput):
            encode = encode_forward if isinstance(item, ForwardInput) else http_input.encode
            store = self._store_for(item.tag, counters)
            forward_batcher: Batcher[LogRecord] = Batcher(self.config.batch, encode, store)
            self._batchers.append(forward_batcher)

            async def sink(records: list[LogRecord]) -> None:
                for record in records:
                    forward_batcher.put(record, record.ByteSize())
                await forward_batcher.flush()  # in the buffer before forward acks / http answers

            if isinstance(item, HttpInput):
                server = await http_input.HttpReceiver(item, sink, counters=counters).start()
            else:
                receiver = forward.ForwardReceiver(item, sink, hostname=socket.gethostname())
                self._forward[item.tag] = receiver
                server = await receiver.start()
        else:
            log.warning("input %s: %s inputs are not supported yet; skipped", item.tag, item.type)
            return
        self._servers.append(server)
        self.addresses[item.tag] = server.sockets[0].getsockname()[:2]

    async def _ship_loop(self) -> None:
        """Ships the buffer's requests oldest first, up to ``server.concurrency`` at once, and acks
        them in order: a request is acknowledged only with every older one, so after a crash at
        most the requests in flight are sent again (marked with ``mark_shipping``, counted)."""
        flights: deque[Flight] = deque()
        try:
            await self._ship(flights)
        finally:
            for flight in flights:
                flight.task.cancel()
            await asyncio.gather(*(flight.task for flight in flights), return_exceptions=True)

    async def _ship(self, flights: deque[Flight]) -> None:
        assert self.buffer is not None
        buffer = self.buffer
        cursor: Position | None = None
        while True:
            room = self.config.server.concurrency - len(flights)
            entries: list[tuple[Position, bytes]] = []
            if room > 0:
                self._appended.clear()  # before the peek: an append after it wakes the wait below
                entries = await asyncio.to_thread(buffer.peek, room, after=cursor)
            if entries:
                await asyncio.to_thread(buffer.mark_shipping, entries[-1][0])
            for position, stored in entries:
                flights.append(self._take_off(position, stored))
                cursor = position
            waits: set[asyncio.Future[Any]] = {flight.task for flight in flights}
            appended = None
            if room > len(entries):  # the buffer had less than we could send: wake on appends too
                appended = asyncio.ensure_future(self._appended.wait())
                waits.add(appended)
            try:
                await asyncio.wait(waits, timeout=IDLE_POLL_SEC, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if appended is not None:
                    appended.cancel()
            while flights and flights[0].task.done():
                flight = flights.popleft()
                try:
                    outcome = flight.task.result()
                except Exception:  # a bug, not the server: never lose the request, never stop shipping
                    log.exception("shipping a request failed unexpectedly; sending it again in 1 s")
                    await asyncio.sleep(1)
                    flights.appendleft(self._take_off(flight.position, flight.stored))
                    break
                if outcome.result is Result.RETRYABLE:
                    flights.appendleft(flight)
                    return  # only after stop: it and everything after it stay buffered
                flight.count(outcome)
                await asyncio.to_thread(buffer.ack, flight.position)
            if not flights:
                cursor = None  # everything shipped is acknowledged: read from the head again

    def _take_off(self, position: Position, stored: bytes) -> Flight:
        assert self.buffer is not None
        tag, records, payload = read_stored_request(stored)
        counters = self._counters.get(tag) or self._counters.setdefault(tag, InputCounters())
        resent = self.buffer.shipped_before_restart(position)
        task = asyncio.get_running_loop().create_task(
            self.shipper.ship(payload, records=records, on_retry=counters.count_retry)
        )
        return Flight(position, stored, task, counters, records, resent)

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def run(self, on_started: Callable[[Agent], None] | None = None) -> None:
        """Starts, waits for `request_stop` (SIGTERM/SIGINT call it when on the main thread), drains."""
        await self.start()
        if on_started is not None:
            on_started(self)
        await self._stop_requested.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stops the inputs, flushes pending batches, drains the buffer for ``drain_sec``, closes."""
        self._draining = True
        log.info("collector draining")
        metrics_server = self._servers[-1] if self._servers else None
        for server in self._servers:
            if server is not metrics_server:
                server.close()
        for transport in self._transports:
            transport.close()
        await asyncio.gather(*(b.drain() for b in self._batchers), return_exceptions=True)
        if self._shipping is not None and self.buffer is not None:
            buffer = self.buffer
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.drain_sec
            while not self._shipping.done() and loop.time() < deadline:
                if (await asyncio.to_thread(buffer.stats)).buffered_records == 0:
                    break
                await asyncio.sleep(0.05)
            self.shipper.stop.set()
            self._shipping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._shipping
        await self.shipper.close()
        if metrics_server is not None:
            metrics_server.close()
        if self.buffer is not None:
            left = self.buffer.stats().buffered_records
            await asyncio.to_thread(self.buffer.close)
            log.info("collector stopped; %d requests left in the buffer", left)


def _problems(path: str, problems: Sequence[str]) -> list[str]:
    return [problem if problem.startswith(path) else f"{path}: {problem}" for problem in problems]


def main(argv: list[str] | None = None) -> int:
    """``observe collector --config collector.toml``: runs until SIGTERM/SIGINT; 2 for a bad config."""
    import argparse
    import gc
    import signal
    import sys

    from collector.buffer import BufferLockedError
    from collector.config import ConfigError, load

    parser = argparse.ArgumentParser(prog="observe collector", description="Syslog and Fluent in, OTLP out.")
    parser.add_argument("--config", default="collector.toml", help="the TOML file (default collector.toml)")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as error:
        for line in _problems(args.config, error.problems):
            print(line, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per export request is noise

    async def run() -> None:
        # Every message makes a few short-lived objects and none makes a cycle: collecting the young
        # generation every 700 allocations (the default) cost ~15 % of a busy agent's CPU.
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        agent = Agent(config)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, agent.request_stop)
        await agent.run()

    try:
        asyncio.run(run())
    except BufferLockedError as error:
        print(f"{args.config}: buffer.dir: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{args.config}: cannot listen: {error}", file=sys.stderr)
        return 1
    return 0
