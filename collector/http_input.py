"""Fluent Bit's ``http`` output in, OTLP log records out: a minimal HTTP/1.1 server.

`HttpReceiver.handle` serves one TCP (or TLS) connection, request after request (keep-alive
unless the client says ``Connection: close``). A ``POST`` to any path carries records in one of
the bodies Fluent Bit's ``http`` output sends:

- ``format json``: a JSON array of record maps; ``json_lines`` (NDJSON) and ``json_stream``
  (maps back to back) are read by the same decoder, which takes any sequence of JSON maps and
  arrays of maps. The time is the ``date`` key (Fluent Bit's default ``json_date_key``): an epoch
  number (seconds; ``epoch_ms`` values, above 1e11, are taken as milliseconds) or an ISO 8601 /
  ``java_sql_timestamp`` string; it is removed from the record. Without it the time is unset.
- ``format msgpack`` (``Content-Type: application/msgpack`` or ``application/x-msgpack``): a
  msgpack stream of ``[time, record]`` (or ``[[time, metadata], record]``) arrays, decoded as the
  forward input decodes entries (EventTime, int or float), or bare record maps read like JSON ones.
- ``Content-Encoding: gzip`` (``compress gzip``) bodies are inflated first.

The Fluent tag is the ``FLUENT-TAG`` / ``X-Fluent-Tag`` header (set Fluent Bit's ``header_tag``
to one of them), else the request path's last segment, else the input's own tag. Records are
mapped by `collector.forward.to_log_record`, so they look exactly like forwarded ones.

Decisions:

- Durability: ``201 Created`` is answered only after ``await sink(records)`` returned (the agent
  appends to its on-disk buffer); a sink that raises gets ``503`` so Fluent Bit retries the chunk.
- ``400`` for a body that is not JSON or msgpack records, bad gzip or a bad request; ``413`` for a
  ``Content-Length`` or an inflated body over ``max_body_bytes`` (the connection is then closed,
  the body is not read); ``411`` without ``Content-Length`` (chunked bodies are not accepted:
  Fluent Bit always sends a length); ``405`` for anything but ``POST``.
- A request head over 16 KiB, or a connection idle for `IDLE_TIMEOUT_SEC`, is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from collector.config import HttpInput
from collector.forward import (
    Entry,
    ForwardProtocolError,
    OversizedError,
    Sink,
    decode_entry,
    gunzip,
    msgpack_feed,
    msgpack_messages,
    msgpack_unpacker,
    to_log_record,
    to_otlp,
)

SCOPE_NAME = "observe.collector.http"
HEAD_LIMIT = 16 * 1024
IDLE_TIMEOUT_SEC = 60.0
BODY_TIMEOUT_SEC = 30.0
DATE_KEY = "date"
TAG_HEADERS = ("fluent-tag", "x-fluent-tag")
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack")
# An epoch number above this is in milliseconds (Fluent Bit's json_date_format epoch_ms).
EPOCH_MS_ABOVE = 1e11

logger = logging.getLogger(__name__)


class Counts(Protocol):
    """Where the receiver counts: records handed to the sink, bad and oversized requests."""

    received: int
    malformed: int
    oversized: int


@dataclass(slots=True)
class HttpCounters:
    received: int = 0
    malformed: int = 0
    oversized: int = 0


class RequestError(ValueError):
    """The request or its body cannot be used: answered with ``status``."""

    def __init__(self, status: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    keep_alive: bool


def encode(records: list[LogRecord]) -> bytes:
    """Records → one serialized export request under this input's instrumentation scope."""
    request: ExportLogsServiceRequest = to_otlp(records)
    request.resource_logs[0].scope_logs[0].scope.name = SCOPE_NAME
    return request.SerializeToString()


class HttpReceiver:
    """One http input: `handle` is the ``asyncio.start_server`` callback; `start` listens."""

    def __init__(self, config: HttpInput, sink: Sink, *, counters: Counts | None = None) -> None:
        self.config = config
        self.sink = sink
        self.counters: Counts = counters if counters is not None else HttpCounters()

    async def start(self) -> asyncio.Server:
        """Listens on ``config.listen`` (TLS when configured); port 0 picks a free port."""
        tls = self.config.tls
        context = tls.server_context() if tls is not None else None
        listen = self.config.listen
        return await asyncio.start_server(self.handle, listen.host, listen.port, ssl=context, limit=HEAD_LIMIT)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else None
        try:
            while await self._serve_one(reader, writer, peer):
                pass
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str | None) -> bool:
        """Reads and answers one request; False when the connection is to be closed."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_SEC)
        except asyncio.IncompleteReadError as error:
            if error.partial.strip():
                self.counters.malformed += 1
            return False
        try:
            request = _parse_head(head)
            body = await self._body(request, reader, writer)
            records = self._records(request, body, peer)
        except RequestError as error:
            if error.status.startswith("413"):
                self.counters.oversized += 1
            else:
                self.counters.malformed += 1
            logger.info("http input %s: %s from %s: %s", self.config.tag, error.status, peer, error)
            return await _respond(writer, error.status, f"{error}\n", keep_alive=not error.close)
        if records:
            try:
                await self.sink(records)
            except Exception:
                logger.exception("http input %s: cannot store %d records", self.config.tag, len(records))
                return await _respond(writer, "503 Service Unavailable", "try again\n", keep_alive=request.keep_alive)
            self.counters.received += len(records)
        return await _respond(writer, "201 Created", "", keep_alive=request.keep_alive)

    async def _body(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        if request.method != "POST":
            raise RequestError("405 Method Not Allowed", "POST records here", close=True)
        if "transfer-encoding" in request.headers:
            raise RequestError("411 Length Required", "chunked bodies are not accepted", close=True)
        text = request.headers.get("content-length")
        if text is None or not text.isdigit():
            raise RequestError("411 Length Required", "Content-Length required", close=True)
        length = int(text)
        if length > self.config.max_body_bytes:
            raise RequestError("413 Content Too Large", f"body over {self.config.max_body_bytes} bytes", close=True)
        if request.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        return await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT_SEC)

    def _records(self, request: Request, body: bytes, peer: str | None) -> list[LogRecord]:
        encoding = request.headers.get("content-encoding", "identity").lower()
        try:
            if encoding in ("gzip", "x-gzip"):
                body = gunzip(body, self.config.max_body_bytes)
            elif encoding != "identity":
                raise RequestError("415 Unsupported Media Type", f"unknown Content-Encoding {encoding!r}")
            media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            entries = list(_msgpack_entries(body) if media in MSGPACK_TYPES else _json_entries(body))
        except OversizedError:
            raise RequestError(
                "413 Content Too Large", f"inflated body over {self.config.max_body_bytes} bytes"
            ) from None
        except ForwardProtocolError as error:
            raise RequestError("400 Bad Request", str(error)) from None
        tag = self._tag(request)
        return [to_log_record(entry, tag=tag, source_tag=self.config.tag, peer=peer) for entry in entries]

    def _tag(self, request: Request) -> str:
        for name in TAG_HEADERS:
            if request.headers.get(name):
                return request.headers[name]
        segment = request.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return segment or self.config.tag


def _parse_head(head: bytes) -> Request:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise RequestError("400 Bad Request", "bad request line", close=True)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise RequestError("400 Bad Request", "bad header line", close=True)
        headers[name.lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if parts[2] == "HTTP/1.1" else connection == "keep-alive"
    return Request(method=parts[0], path=parts[1], headers=headers, keep_alive=keep_alive)


async def _respond(writer: asyncio.StreamWriter, status: str, text: str, *, keep_alive: bool) -> bool:
    body = text.encode()
    connection = "keep-alive" if keep_alive else "close"
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {connection}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return keep_alive


def _json_entries(body: bytes) -> Iterator[Entry]:
    """JSON maps, arrays of maps, or a sequence of them (NDJSON, json_stream) → entries."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ForwardProtocolError("the body is not UTF-8 JSON") from None
    decoder = json.JSONDecoder()
    position = 0
    while True:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if position == len(text):
            return
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise ForwardProtocolError(f"bad JSON: {error}") from None
        for record in value if isinstance(value, list) else [value]:
            if not isinstance(record, dict):
                raise ForwardProtocolError("expected JSON maps (records)")
            yield _dated_entry(record)


def _msgpack_entries(body: bytes) -> Iterator[Entry]:
    unpacker = msgpack_unpacker(max(len(body), 1))
    msgpack_feed(unpacker, body)
    end = 0
    for item in msgpack_messages(unpacker):
        yield _dated_entry(item) if isinstance(item, dict) else decode_entry(item)
        end = unpacker.tell()
    if end != len(body):
        raise ForwardProtocolError("the msgpack body ends inside a record")


def _dated_entry(record: dict[Any, Any]) -> Entry:
    """A record with its time under `DATE_KEY`: the key is taken out when it parses as a time."""
    stamp = _date_unix_nano(record.get(DATE_KEY))
    if stamp is None:
        return Entry(None, record)
    return Entry(stamp, {key: value for key, value in record.items() if key != DATE_KEY})


def _date_unix_nano(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            return None
        # Rounded to the microsecond: a double epoch carries no more, and rounding undoes its binary error.
        if value > EPOCH_MS_ABOVE:
            return round(value * 1000) * 1000
        return round(value * 1_000_000) * 1000
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    return None
