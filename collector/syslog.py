"""Syslog in, OTLP log records out: parsing, TCP framing and the mapping, as pure functions.

`parse` reads one message, RFC 5424 (``<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG``) or RFC 3164/BSD
(``<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG``, and the headerless ``<PRI>tag: msg`` that Python's
``SysLogHandler`` sends). Nothing is lost: a line that is neither keeps its raw text as the body, an
unknown severity and ``syslog.parse_error``. `Framer` splits a TCP stream (RFC 6587).
`collector.syslog_otlp` maps messages to OTLP as the OpenTelemetry data-model appendix says for Syslog:

=================  ==============================================================================
TIMESTAMP          ``time_unix_nano`` (the sender's clock; unset when NILVALUE)
(received)         ``observed_time_unix_nano`` = ``received_at``
PRI severity       SeverityNumber per appendix B (below); SeverityText the syslog keyword
PRI facility       ``syslog.facility`` (int)
VERSION            ``syslog.version`` (RFC 5424 only)
HOSTNAME           resource ``host.name``
APP-NAME / TAG     resource ``service.name``
PROCID / [PID]     ``syslog.procid`` (string, as the appendix says, even when numeric)
MSGID              ``syslog.msgid``
SD origin          ``origin.swVersion`` → resource ``service.version``; ``origin.ip`` → ``client.address``
SD (the rest)      ``syslog.structured_data.<SD-ID>.<PARAM>`` (an array when a PARAM repeats)
MSG                Body (string; a UTF-8 BOM is dropped, bad bytes become U+FFFD)
(input)            ``observe.source`` = the input's source tag; ``network.peer.address`` = the peer
=================  ==============================================================================

Severity (appendix B): emerg→FATAL(21), alert→ERROR3(19), crit→ERROR2(18), err→ERROR(17),
warning→WARN(13), notice→INFO2(10), info→INFO(9), debug→DEBUG(5).

Timestamps without a zone (all of RFC 3164, and RFC 5424 senders that omit it) are read in
``local_tz`` (default: ``received_at``'s zone); RFC 3164 has no year, so the year is the one that puts
the timestamp nearest ``received_at`` (a December message received in January is last year's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

SCOPE_NAME = "observe.collector.syslog"
MAX_UNIX_NANO = 1 << 64  # OTLP times are fixed64 nanoseconds since 1970

SEVERITY_KEYWORDS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
SEVERITY_NUMBERS: tuple[SeverityNumber.ValueType, ...] = (
    SeverityNumber.SEVERITY_NUMBER_FATAL,
    SeverityNumber.SEVERITY_NUMBER_ERROR3,
    SeverityNumber.SEVERITY_NUMBER_ERROR2,
    SeverityNumber.SEVERITY_NUMBER_ERROR,
    SeverityNumber.SEVERITY_NUMBER_WARN,
    SeverityNumber.SEVERITY_NUMBER_INFO2,
    SeverityNumber.SEVERITY_NUMBER_INFO,
    SeverityNumber.SEVERITY_NUMBER_DEBUG,
)

# An SD element's params, in order; a param name may repeat (RFC 5424 §6.3.3).
StructuredData = list[tuple[str, list[tuple[str, str]]]]


@dataclass(slots=True)
class SyslogMessage:
    """One received message. `format` is "rfc5424", "rfc3164" or None when it did not parse."""

    received_at: datetime
    source_tag: str
    peer: str | None
    message: str
    format: str | None = None
    facility: int | None = None
    severity: int | None = None
    version: int | None = None
    timestamp: datetime | None = None
    hostname: str | None = None
    app_name: str | None = None
    procid: str | None = None
    msgid: str | None = None
    structured_data: StructuredData = field(default_factory=list)
    parse_error: str | None = None
    time_unix_nano: int = 0  # ``timestamp`` in nanoseconds, set by `parse` (0: compute it when needed)


class SyslogParseError(ValueError):
    """Why a line is not syslog; `parse` turns it into a raw message, it never escapes."""


_PRI = re.compile(r"<(\d{1,3})>")
_RFC5424_HEADER = re.compile(r"(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) ")
_ISO_TIMESTAMP = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?", re.IGNORECASE
)
_BSD_TIMESTAMP = re.compile(r"([A-Z][a-z]{2}) ([ \d]?\d) (\d\d):(\d\d):(\d\d)")
_MONTHS = {
    m: i
    for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], start=1)
}
# TAG[PID]: MSG. A tag has no spaces, colons or brackets; BSD says ≤ 32 characters, Linux sends up to 48.
_TAG = re.compile(r"([^\s:\[\]]{1,48})(?:\[([^\]\s]{0,128})\])?:(?: |$)")
_SD_NAME = re.compile(r"[^= \]\"]{1,32}")
_SD_PLAIN = re.compile(r'\[([^= \]"]{1,32})((?: [^= \]"]{1,32}="[^"\\]*")*)\]')
_SD_PARAM = re.compile(r' ([^= \]"]{1,32})="([^"\\]*)"')


def parse(
    line: bytes, *, received_at: datetime, source_tag: str, peer: str | None, local_tz: tzinfo | None = None
) -> SyslogMessage:
    """One frame or datagram → a message; a line that is not syslog is kept raw, never an error."""
    line = line.rstrip(b"\r\n\x00")
    text = line.decode("utf-8", errors="replace")
    zone = local_tz or received_at.tzinfo
    try:
        pri = _PRI.match(text)
        if pri is None:
            raise SyslogParseError("no <PRI> at the start")
        prival = int(pri.group(1))
        if prival > 191:
            raise SyslogParseError(f"PRI {prival} is out of range (0-191)")
        rest = text[pri.end() :]
        header = _RFC5424_HEADER.match(rest)
        if header is not None:
            return _parse_rfc5424(
                header, rest, zone, SyslogMessage(received_at, source_tag, peer, "", "rfc5424", prival >> 3, prival & 7)
            )
        return _parse_rfc3164(
            rest,
            received_at,
            zone,
            SyslogMessage(received_at, source_tag, peer, "", "rfc3164", prival >> 3, prival & 7),
        )
    except SyslogParseError as error:
        return SyslogMessage(received_at, source_tag, peer, text, parse_error=str(error))


def _parse_rfc5424(header: re.Match[str], rest: str, zone: tzinfo | None, message: SyslogMessage) -> SyslogMessage:
    """Fills ``message`` (PRI and the input's fields set) from the rest of an RFC 5424 line."""
    version, stamp, host, app, procid, msgid = header.groups()
    structured_data, position = _parse_structured_data(rest, header.end())
    if position < len(rest):
        if rest[position] != " ":
            raise SyslogParseError(f"expected a space before MSG at {position}")
        position += 1
    message.message = rest[position:].removeprefix("\ufeff")
    message.version = int(version)
    if stamp != "-":
        message.timestamp, message.time_unix_nano = _iso_timestamp(stamp, zone, whole=True)
    message.hostname = None if host == "-" else host
    message.app_name = None if app == "-" else app
    message.procid = None if procid == "-" else procid
    message.msgid = None if msgid == "-" else msgid
    message.structured_data = structured_data
    return message


def _parse_structured_data(text: str, position: int) -> tuple[StructuredData, int]:
    """``-`` or ``[id name="value" …]…`` from `position` → the elements and where MSG starts."""
    if text.startswith("-", position):
        return [], position + 1
    elements: StructuredData = []
    # Elements without backslashes (nearly all) in one match each; the rest character by character.
    while (plain := _SD_PLAIN.match(text, position)) is not None:
        elements.append((plain.group(1), _SD_PARAM.findall(plain.group(2))))
        position = plain.end()
    while text.startswith("[", position):
        sd_id = _SD_NAME.match(text, position + 1)
        if sd_id is None:
            raise SyslogParseError(f"bad SD-ID at {position + 1}")
        position = sd_id.end()
        params: list[tuple[str, str]] = []
        while text.startswith(" ", position):
            name = _SD_NAME.match(text, position + 1)
            if name is None or not text.startswith('="', name.end()):
                raise SyslogParseError(f'expected PARAM-NAME="… at {position + 1}')
            value, position = _sd_value(text, name.end() + 2)
            params.append((name.group(), value))
        if not text.startswith("]", position):
            raise SyslogParseError(f"expected ] at {position}")
        position += 1
        elements.append((sd_id.group(), params))
    if not elements:
        raise SyslogParseError(f"expected STRUCTURED-DATA at {position}")
    return elements, position


def _sd_value(text: str, position: int) -> tuple[str, int]:
    """A PARAM-VALUE after its opening quote: ``\\"``, ``\\\\`` and ``\\]`` unescaped, any other
    backslash kept as sent (RFC 5424 §6.3.3); returns the value and the index after the closing quote."""
    out: list[str] = []
    start = position
    while True:
        quote = text.find('"', position)
        backslash = text.find("\\", position, quote if quote >= 0 else len(text))
        if backslash >= 0:
            out.append(text[position:backslash])
            following = text[backslash + 1 : backslash + 2]
            out.append(following if following in ('"', "\\", "]") else "\\" + following)
            position = backslash + 2
            continue
        if quote < 0:
            raise SyslogParseError(f"unterminated PARAM-VALUE at {start}")
        out.append(text[position:quote])
        return "".join(out), quote + 1


def _parse_rfc3164(rest: str, received_at: datetime, zone: tzinfo | None, message: SyslogMessage) -> SyslogMessage:
    """BSD syslog, leniently: each of timestamp, hostname and tag is taken only when it is there."""
    timestamp: datetime | None = None
    nanos = 0
    hostname: str | None = None
    bsd = _BSD_TIMESTAMP.match(rest)
    iso = None if bsd else _ISO_TIMESTAMP.match(rest)  # rsyslog's RSYSLOG_ForwardFormat
    stamp = bsd or iso
    if stamp is not None and rest.startswith(" ", stamp.end()):
        timestamp, nanos = _bsd_timestamp(bsd, received_at, zone) if bsd else _iso_timestamp(stamp.group(), zone)
        rest = rest[stamp.end() + 1 :]
        # A hostname follows a timestamp, except from local senders that go straight to the tag.
        word, _, after = rest.partition(" ")
        if word and not word.endswith(":"):
            hostname, rest = word, after
    app_name = procid = None
    tag = _TAG.match(rest)
    if tag is not None:
        app_name, procid = tag.group(1), tag.group(2) or None
        rest = rest[tag.end() :]
    message.message = rest
    message.timestamp = timestamp
    message.time_unix_nano = nanos
    message.hostname = hostname
    message.app_name = app_name
    message.procid = procid
    return message


def _iso_timestamp(stamp: str, zone: tzinfo | None, *, whole: bool = False) -> tuple[datetime, int]:
    """The time and its nanoseconds since 1970."""
    match = _ISO_TIMESTAMP.fullmatch(stamp) if whole else _ISO_TIMESTAMP.match(stamp)
    if match is None:
        raise SyslogParseError(f"bad TIMESTAMP {stamp[:40]!r}")
    fraction = match.group(7)
    microsecond = int(fraction[:6].ljust(6, "0")) if fraction else 0
    # Messages in a burst share their second: the whole-second part is made and checked once.
    key = (match.group(1, 2, 3, 4, 5, 6, 8), zone)
    cached = _SECONDS.get(key)
    if cached is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        base = _whole_second(match, zone, stamp)
        cached = _SECONDS[key] = (base, unix_nano(base))
    if not microsecond:
        return cached
    return cached[0].replace(microsecond=microsecond), cached[1] + microsecond * 1_000


_SECONDS: dict[tuple[tuple[str | Any, ...], tzinfo | None], tuple[datetime, int]] = {}


def _whole_second(match: re.Match[str], zone: tzinfo | None, stamp: str) -> datetime:
    year, month, day, hour, minute, second, _, offset = match.groups()
    microsecond = 0
    if offset is None:
        zone_of_stamp = zone
    elif offset.upper() == "Z":
        zone_of_stamp = UTC
    else:
        sign = -1 if offset[0] == "-" else 1
        zone_of_stamp = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), microsecond, zone_of_stamp
        )
    except ValueError as error:
        raise SyslogParseError(f"bad TIMESTAMP {stamp[:40]!r}: {error}") from None
    if not 0 <= unix_nano(moment) < MAX_UNIX_NANO - 1_000_000_000:
        raise SyslogParseError(f"TIMESTAMP {stamp[:40]!r} is outside what OTLP can carry (1970 to 2554)")
    return moment


def _bsd_timestamp(match: re.Match[str], received_at: datetime, zone: tzinfo | None) -> tuple[datetime, int]:
    # The nearest year only changes with received_at's hour near a half-year boundary: one
    # computation a stamp and hour serves a burst of messages.
    key = (match.group(), zone, received_at.year, received_at.month, received_at.day, received_at.hour)
    moment = _BSD_STAMPS.get(key)
    if moment is None:
        if len(_BSD_STAMPS) >= 4096:
            _BSD_STAMPS.clear()
        nearest = _nearest_year(match, received_at, zone)
        moment = _BSD_STAMPS[key] = (nearest, max(unix_nano(nearest), 0))
    return moment


_BSD_STAMPS: dict[tuple[Any, ...], tuple[datetime, int]] = {}


def _nearest_year(match: re.Match[str], received_at: datetime, zone: tzinfo | None) -> datetime:
    month_name, day, hour, minute, second = match.groups()
    month = _MONTHS.get(month_name)
    if month is None:
        raise SyslogParseError(f"bad month {month_name!r}")
    candidates = []
    for year in (received_at.year - 1, received_at.year, received_at.year + 1):
        try:
            candidates.append(datetime(year, month, int(day), int(hour), int(minute), int(second), tzinfo=zone))
        except ValueError:
            continue  # Feb 29 in a year without one, or an impossible date
    if not candidates:
        raise SyslogParseError(f"bad TIMESTAMP {match.group()!r}")
    reference = received_at if zone is not None else received_at.replace(tzinfo=None)
    return min(candidates, key=lambda candidate: abs(candidate - reference))


class Framer:
    """Splits one TCP connection's bytes into frames (RFC 6587), fed in whatever chunks arrive.

    The first byte of the connection decides the framing for its lifetime: a digit means octet
    counting (``LEN SP MSG``), anything else non-transparent framing (LF or NUL ends a frame).
    A frame longer than `max_frame_bytes` is cut to that length (the rest skipped) and counted in
    `oversized`; a bad length is counted in `malformed` and the framer skips to the next LF.
    Neither stops the stream. `close` returns what an unterminated last frame held.
    """

    def __init__(self, *, max_frame_bytes: int = 64 * 1024) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.octet_counting: bool | None = None
        self.oversized = 0
        self.malformed = 0
        self._buffer = bytearray()
        self._skip = 0  # bytes of an oversized octet-counted frame still to drop
        self._skip_to_newline = False

    def feed(self, data: bytes) -> list[bytes]:
        """Adds `data` and returns every frame it completed (empty frames are not returned)."""
        self._buffer += data
        if self.octet_counting is None:
            start = self._buffer.lstrip(b"\r\n\x00 ")
            if not start:
                return []
            self.octet_counting = start[:1].isdigit()
        return self._octet_frames() if self.octet_counting else self._delimited_frames()

    def close(self) -> list[bytes]:
        """The connection ended: an unterminated last frame is still a frame."""
        rest = bytes(self._buffer).lstrip(b"\r\n\x00").rstrip(b"\r\n\x00")
        self._buffer.clear()
        if self._skip or self._skip_to_newline or not rest.strip():
            return []
        if self.octet_counting:
            # The count promised more than arrived; keep what did, as its own message.
            length, _, frame = rest.partition(b" ")
            return [frame[: self.max_frame_bytes]] if length.isdigit() and frame else []
        return [rest[: self.max_frame_bytes]]

    def _delimited_frames(self) -> list[bytes]:
        frames: list[bytes] = []
        buffer = self._buffer
        start = 0
        while True:
            end = _next_delimiter(buffer, start)
            if end < 0:
                break
            if self._skip_to_newline:
                self._skip_to_newline = False
            elif end - start > self.max_frame_bytes:
                self.oversized += 1
                frames.append(bytes(buffer[start : start + self.max_frame_bytes]))
            elif end > start:
                frames.append(bytes(buffer[start:end]))
            start = end + 1
        del buffer[:start]
        if len(buffer) > self.max_frame_bytes:
            if not self._skip_to_newline:
                self.oversized += 1
                frames.append(bytes(buffer[: self.max_frame_bytes]))
                self._skip_to_newline = True
            buffer.clear()
        return frames

    def _octet_frames(self) -> list[bytes]:
        frames: list[bytes] = []
        buffer = self._buffer
        position = 0
        while position < len(buffer):
            if self._skip:
                dropped = min(self._skip, len(buffer) - position)
                self._skip -= dropped
                position += dropped
                continue
            if self._skip_to_newline:
                newline = buffer.find(b"\n", position)
                if newline < 0:
                    position = len(buffer)
                    break
                self._skip_to_newline = False
                position = newline + 1
                continue
            if buffer[position] in b"\r\n\x00 ":  # stray LF between counted frames (some senders add one)
                position += 1
                continue
            space = buffer.find(b" ", position, position + 12)
            digits = bytes(buffer[position : space if space >= 0 else position + 12])
            if space < 0 and len(buffer) - position < 12 and digits.isdigit():
                break  # the length may still be arriving
            if space < 0 or not digits.isdigit() or digits.startswith(b"0"):
                self.malformed += 1
                self._skip_to_newline = True
                continue
            length = int(digits)
            body_start = space + 1
            if length > self.max_frame_bytes:
                if len(buffer) - body_start < self.max_frame_bytes:
                    break  # wait for the part we keep
                self.oversized += 1
                frames.append(bytes(buffer[body_start : body_start + self.max_frame_bytes]))
                self._skip = length - self.max_frame_bytes
                position = body_start + self.max_frame_bytes
                continue
            if len(buffer) - body_start < length:
                break
            frames.append(bytes(buffer[body_start : body_start + length]))
            position = body_start + length
        del buffer[:position]
        return frames


def _next_delimiter(buffer: bytearray, start: int) -> int:
    newline = buffer.find(b"\n", start)
    nul = buffer.find(b"\x00", start, newline if newline >= 0 else len(buffer))
    return nul if nul >= 0 else newline


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def unix_nano(moment: datetime) -> int:
    """Exact nanoseconds (no float); a naive time (no zone anywhere) is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1_000
