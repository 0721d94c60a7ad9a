"""The Fluent forward protocol in, OTLP log records out (Forward Protocol Specification v1).

`ForwardReceiver.handle` serves one TCP (or TLS) connection: the msgpack stream is decoded
incrementally into the four event modes, each mapped to OTLP ``LogRecord`` s and handed to the
caller's ``sink``:

- Message ``[tag, time, record, option?]``
- Forward ``[tag, [[time, record], ...], option?]``
- PackedForward ``[tag, bin(msgpack entries), option?]``
- CompressedPackedForward: PackedForward with ``option.compressed == "gzip"`` (one or more gzip
  members concatenated).

``time`` is an int or float (seconds), or EventTime (ext type 0: big-endian uint32 seconds, uint32
nanoseconds); Fluent Bit's ``[time, metadata]`` pair is accepted too (the metadata is not kept).

Decisions:

- Durability: ``{"ack": chunk}`` is written only after ``await sink(records)`` returned, so an
  acked chunk is as durable as the sink makes it (the collector appends to its on-disk buffer).
  A sink that raises gets no ack; the connection closes and the sender retries.
- A stream cannot be resynchronised after bad msgpack or a wrong shape: the connection is counted
  (``malformed``) and closed; the server and other connections carry on. A message larger than
  ``max_message_bytes`` (also the cap on a compressed chunk's decompressed size) is counted
  (``oversized``) and closed the same way.
- With a ``shared_key`` the handshake is required (HELO → PING → PONG, no user auth: ``auth`` is
  empty and username/password are ignored); a wrong digest gets ``PONG false`` and the connection
  closes. The key is never logged.
- Mapping: the ``message`` (else ``log``) key is the body and the other keys attributes; a record
  with neither is the body as a kvlist. ``level``/``severity`` words set the severity (and leave the
  attributes); ``fluent.tag``, ``observe.source`` and ``network.peer.address`` are added; observed
  time is the arrival time. Strings that are not UTF-8 have bad bytes replaced by U+FFFD.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import socket
import ssl
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber

from collector.config import MIB, ForwardInput
from collector.syslog import SEVERITY_KEYWORDS, SEVERITY_NUMBERS

SCOPE_NAME = "observe.collector.forward"
DEFAULT_MAX_MESSAGE_BYTES = 16 * MIB
READ_BYTES = 64 * 1024
EVENT_TIME_EXT = 0

Sink = Callable[[list[LogRecord]], Awaitable[None]]

logger = logging.getLogger(__name__)

# Severity words, case-insensitive: the syslog keywords (appendix B) plus the common logger levels.
SEVERITY_WORDS: dict[str, SeverityNumber.ValueType] = dict(zip(SEVERITY_KEYWORDS, SEVERITY_NUMBERS, strict=True)) | {
    "trace": SeverityNumber.SEVERITY_NUMBER_TRACE,
    "verbose": SeverityNumber.SEVERITY_NUMBER_DEBUG,
    "information": SeverityNumber.SEVERITY_NUMBER_INFO,
    "informational": SeverityNumber.SEVERITY_NUMBER_INFO,
    "warn": SeverityNumber.SEVERITY_NUMBER_WARN,
    "error": SeverityNumber.SEVERITY_NUMBER_ERROR,
    "critical": SeverityNumber.SEVERITY_NUMBER_ERROR2,
    "emergency": SeverityNumber.SEVERITY_NUMBER_FATAL,
    "fatal": SeverityNumber.SEVERITY_NUMBER_FATAL,
    "panic": SeverityNumber.SEVERITY_NUMBER_FATAL,
}
BODY_KEYS = ("message", "log")
SEVERITY_KEYS = ("level", "severity")
INT64 = range(-(2**63), 2**63)


class ForwardProtocolError(ValueError):
    """The peer broke the protocol; the connection is closed (the stream cannot be resynchronised)."""


class OversizedError(ForwardProtocolError):
    """A message (or a chunk's decompressed entries) is over the cap."""


@dataclass(slots=True)
class ForwardCounters:
    """Per-input counts for ``/metrics``; ``received`` counts records handed to the sink."""

    connections: int = 0
    received: int = 0
    acked_chunks: int = 0
    malformed: int = 0
    oversized: int = 0
    auth_failed: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    time_unix_nano: int | None
    record: dict[Any, Any]


class ForwardReceiver:
    """One forward input: `handle` is the ``asyncio.start_server`` callback; `start` listens."""

    def __init__(
        self,
        config: ForwardInput,
        sink: Sink,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        hostname: str | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.max_message_bytes = max_message_bytes
        self.hostname = hostname or socket.gethostname()
        self.counters = ForwardCounters()

    async def start(self) -> asyncio.Server:
        """Listens on ``config.listen`` (TLS when configured); port 0 picks a free port."""
        tls = self.config.tls
        context = tls.server_context() if tls is not None else None
        listen = self.config.listen
        return await asyncio.start_server(self.handle, listen.host, listen.port, ssl=context)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else None
        try:
            leftover = b""
            if self.config.shared_key is not None:
                authenticated, leftover = await self._handshake(reader, writer)
                if not authenticated:
                    return
            await self._serve(reader, writer, peer, leftover)
        except OversizedError as error:
            self.counters.oversized += 1
            logger.warning("forward input %s: closing %s: %s", self.config.tag, peer, error)
        except ForwardProtocolError as error:
            self.counters.malformed += 1
            logger.warning("forward input %s: closing %s: %s", self.config.tag, peer, error)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # the sink failed: no ack, so the sender keeps the chunk and retries
            logger.exception("forward input %s: closing %s", self.config.tag, peer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str | None, data: bytes
    ) -> None:
        unpacker = msgpack_unpacker(self.max_message_bytes)
        while True:
            msgpack_feed(unpacker, data)
            for message in msgpack_messages(unpacker):
                tag, entries, option = _event(message, self.max_message_bytes)
                records = [to_log_record(entry, tag=tag, source_tag=self.config.tag, peer=peer) for entry in entries]
                if records:
                    await self.sink(records)
                    self.counters.received += len(records)
                chunk = option.get("chunk")
                if chunk is not None:
                    writer.write(msgpack.packb({"ack": chunk}))
                    await writer.drain()
                    self.counters.acked_chunks += 1
            data = await reader.read(READ_BYTES)
            if not data:
                return

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[bool, bytes]:
        """HELO, then the client's PING checked against the shared key; returns (ok, bytes read past PING)."""
        assert self.config.shared_key is not None
        shared_key = self.config.shared_key.encode()
        nonce = os.urandom(16)
        writer.write(msgpack.packb(["HELO", {"nonce": nonce, "auth": b"", "keepalive": True}], use_bin_type=True))
        await writer.drain()
        # raw=True: the salt and hostname are hashed as the bytes that were sent.
        unpacker = msgpack.Unpacker(raw=True, max_buffer_size=64 * 1024)
        while True:
            ping = next(msgpack_messages(unpacker), None)
            if ping is not None:
                break
            data = await reader.read(READ_BYTES)
            if not data:
                raise ConnectionError("closed before PING")
            msgpack_feed(unpacker, data)
        if not (isinstance(ping, list) and len(ping) == 6 and ping[0] == b"PING"):
            raise ForwardProtocolError("expected PING after HELO")
        _, client_hostname, salt, digest = ping[:4]
        if not all(isinstance(value, bytes) for value in (client_hostname, salt, digest)):
            raise ForwardProtocolError("PING fields must be strings")
        expected = hashlib.sha512(salt + client_hostname + nonce + shared_key).hexdigest().encode()
        hostname = self.hostname.encode()
        if not hmac.compare_digest(expected, digest):
            self.counters.auth_failed += 1
            writer.write(msgpack.packb(["PONG", False, "shared_key mismatch", self.hostname, ""]))
            await writer.drain()
            return False, b""
        server_digest = hashlib.sha512(salt + hostname + nonce + shared_key).hexdigest()
        writer.write(msgpack.packb(["PONG", True, "", self.hostname, server_digest]))
        await writer.drain()
        return True, unpacker.read_bytes(64 * 1024)


def msgpack_unpacker(max_bytes: int) -> Any:
    return msgpack.Unpacker(
        raw=False, unicode_errors="replace", strict_map_key=False, max_buffer_size=max_bytes, timestamp=0
    )


def msgpack_feed(unpacker: Any, data: bytes) -> None:
    if not data:
        return
    try:
        unpacker.feed(data)
    except msgpack.BufferFull:
        raise OversizedError("message over the size cap") from None


def msgpack_messages(unpacker: Any) -> Iterator[Any]:
    """Every complete object in the unpacker's buffer; bad msgpack → `ForwardProtocolError`."""
    while True:
        try:
            yield unpacker.unpack()
        except msgpack.OutOfData:
            return
        except ValueError as error:  # msgpack's FormatError, StackError and length limits are ValueErrors
            if "exceeds max_" in str(error):
                raise OversizedError("message over the size cap") from None
            raise ForwardProtocolError(f"bad msgpack: {error}") from None
        except TypeError as error:  # a map key that cannot be a key (a map or an array)
            raise ForwardProtocolError(f"bad msgpack: {error}") from None


def _event(message: Any, max_bytes: int) -> tuple[str, list[Entry], dict[Any, Any]]:
    """One decoded message → (tag, entries, option), whichever of the four modes it is."""
    if not isinstance(message, list) or not 2 <= len(message) <= 4 or not isinstance(message[0], str):
        raise ForwardProtocolError("expected [tag, ...] with a string tag")
    tag, second = message[0], message[1]
    if isinstance(second, list | bytes):
        if len(message) == 4:
            raise ForwardProtocolError("Forward and PackedForward take [tag, entries, option?]")
        option = _option(message[2] if len(message) == 3 else None)
        if isinstance(second, list):
            return tag, [decode_entry(item) for item in second], option
        compressed = option.get("compressed", "text")
        if compressed == "gzip":
            second = gunzip(second, max_bytes)
        elif compressed != "text":
            raise ForwardProtocolError(f"unknown compression {compressed!r}")
        unpacker = msgpack_unpacker(max(len(second), 1))
        msgpack_feed(unpacker, second)
        entries, end = [], 0
        for item in msgpack_messages(unpacker):
            entries.append(decode_entry(item))
            end = unpacker.tell()  # after OutOfData tell() counts the partial bytes too
        if end != len(second):
            raise ForwardProtocolError("PackedForward ends inside an entry")
        return tag, entries, option
    if len(message) < 3:
        raise ForwardProtocolError("Message mode needs [tag, time, record]")
    option = _option(message[3] if len(message) == 4 else None)
    return tag, [decode_entry([second, message[2]])], option


def _option(option: Any) -> dict[Any, Any]:
    if option is None:
        return {}
    if not isinstance(option, dict):
        raise ForwardProtocolError("option must be a map")
    return option


def decode_entry(item: Any) -> Entry:
    if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], dict):
        raise ForwardProtocolError("an entry must be [time, record] with a map record")
    stamp = item[0]
    if isinstance(stamp, list) and len(stamp) == 2:  # Fluent Bit ≥ 2.1: [[time, metadata], record]
        stamp = stamp[0]
    return Entry(_time_unix_nano(stamp), item[1])


def _time_unix_nano(stamp: Any) -> int | None:
    """The entry's time in nanoseconds; None (unset) for zero, negative, non-finite or past-2554 times,
    which an OTLP ``fixed64`` cannot carry."""
    if isinstance(stamp, bool):
        raise ForwardProtocolError("time must be a number or EventTime")
    if isinstance(stamp, int):
        nanos = stamp * 1_000_000_000
    elif isinstance(stamp, float):
        nanos = int(stamp * 1e9) if math.isfinite(stamp) else 0
    elif isinstance(stamp, msgpack.ExtType) and stamp.code == EVENT_TIME_EXT and len(stamp.data) == 8:
        seconds, fraction = struct.unpack(">II", stamp.data)
        nanos = int(seconds) * 1_000_000_000 + int(fraction)
    elif isinstance(stamp, msgpack.Timestamp):
        nanos = int(stamp.to_unix_nano())
    else:
        raise ForwardProtocolError("time must be a number or EventTime")
    return nanos if 0 < nanos < 1 << 64 else None


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Every gzip member in `data`, concatenated; more than `max_bytes` out → `OversizedError`."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, max_bytes - len(out) + 1)
        except zlib.error as error:
            raise ForwardProtocolError(f"bad gzip: {error}") from None
        if len(out) > max_bytes:
            raise OversizedError("decompressed chunk over the size cap")
        if not inflater.eof:
            raise ForwardProtocolError("truncated gzip member")
        data = inflater.unused_data
    return bytes(out)


def to_log_record(entry: Entry, *, tag: str, source_tag: str, peer: str | None) -> LogRecord:
    """One event → one OTLP log record (the mapping in the module docstring)."""
    record = dict(entry.record)
    severity_text = ""
    severity_number = SeverityNumber.SEVERITY_NUMBER_UNSPECIFIED
    for key in SEVERITY_KEYS:
        value = record.get(key)
        if isinstance(value, str) and value.strip().lower() in SEVERITY_WORDS:
            severity_text, severity_number = value, SEVERITY_WORDS[value.strip().lower()]
            del record[key]
            break
    body_key = next((key for key in BODY_KEYS if key in record), None)
    if body_key is None:
        body = _any_value(record)
        record = {}
    else:
        body = _any_value(record.pop(body_key))
    attributes = [KeyValue(key=str(key), value=_any_value(value)) for key, value in record.items()]
    attributes.append(KeyValue(key="fluent.tag", value=AnyValue(string_value=tag)))
    attributes.append(KeyValue(key="observe.source", value=AnyValue(string_value=source_tag)))
    if peer:
        attributes.append(KeyValue(key="network.peer.address", value=AnyValue(string_value=peer)))
    return LogRecord(
        time_unix_nano=entry.time_unix_nano or 0,
        observed_time_unix_nano=time.time_ns(),
        severity_number=severity_number,
        severity_text=severity_text,
        body=body,
        attributes=attributes,
    )


def _any_value(value: Any) -> AnyValue:
    """A decoded msgpack value → AnyValue; ints beyond int64 and unknown ext types become strings."""
    if value is None:
        return AnyValue()
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value) if value in INT64 else AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any_value(item) for item in value]))
    if isinstance(value, dict):
        pairs = [KeyValue(key=str(key), value=_any_value(item)) for key, item in value.items()]
        return AnyValue(kvlist_value=KeyValueList(values=pairs))
    return AnyValue(string_value=repr(value))


def to_otlp(records: Iterable[LogRecord]) -> ExportLogsServiceRequest:
    """Records → one export request under this input's instrumentation scope (no resource attributes)."""
    scope = ScopeLogs(scope=InstrumentationScope(name=SCOPE_NAME), log_records=list(records))
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[scope])])
