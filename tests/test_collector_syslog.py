"""Syslog parsing, TCP framing and the OTLP mapping, with what real senders put on the wire.

Pure and fast: the only sockets are local ones that capture util-linux `logger` and Python's
`SysLogHandler` output byte for byte.
"""

from __future__ import annotations

import logging
import logging.handlers
import shutil
import socket
import subprocess
from datetime import UTC, datetime, timedelta, timezone

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber

from collector.syslog import Framer, SyslogMessage, parse
from collector.syslog_otlp import encode_request, to_log_record, to_otlp

RECEIVED = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def parsed(line: bytes, received_at: datetime = RECEIVED) -> SyslogMessage:
    return parse(line, received_at=received_at, source_tag="edge", peer="192.0.2.7")


def attributes(record: LogRecord) -> dict[str, object]:
    def plain(value: AnyValue) -> object:
        kind = value.WhichOneof("value")
        if kind == "array_value":
            return [plain(item) for item in value.array_value.values]
        return getattr(value, kind) if kind else None

    return {pair.key: plain(pair.value) for pair in record.attributes}


def test_rfc5424_examples_from_the_rfc_parse_with_structured_data_bom_and_offsets() -> None:
    first = parsed(
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8\n"
    )
    assert (first.format, first.facility, first.severity, first.version) == ("rfc5424", 4, 2, 1)
    assert first.timestamp == datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC)
    assert (first.hostname, first.app_name, first.procid, first.msgid) == ("mymachine.example.com", "su", None, "ID47")
    assert first.message == "'su root' failed for lonvick on /dev/pts/8"
    assert first.structured_data == []

    second = parsed(
        b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts."
    )
    assert second.timestamp == datetime(2003, 8, 24, 12, 14, 15, 3, tzinfo=UTC)
    assert second.timestamp.utcoffset() == timedelta(hours=-7)
    assert (second.facility, second.severity, second.procid, second.msgid) == (20, 5, "8710", None)
    assert second.message == "%% It's time to make the do-nuts."

    fourth = parsed(
        b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" '
        b'eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]'
    )
    assert fourth.structured_data == [
        ("exampleSDID@32473", [("iut", "3"), ("eventSource", "Application"), ("eventID", "1011")]),
        ("examplePriority@32473", [("class", "high")]),
    ]
    assert fourth.message == ""

    escaped = parsed(
        b'<13>1 2026-03-04T05:06:07Z h a - - [x@1 q="say \\"hi\\"" path="C:\\\\tmp" br="[a\\]" other="\\n"] m'
    )
    assert escaped.structured_data == [
        ("x@1", [("q", 'say "hi"'), ("path", "C:\\tmp"), ("br", "[a]"), ("other", "\\n")])
    ]
    assert escaped.message == "m"


def test_rfc5424_timestamps_keep_fractions_and_nilvalues_stay_unset() -> None:
    nano = parsed(b"<14>1 2026-03-04T05:06:07.123456789+02:00 - - - - - x")
    assert nano.timestamp == datetime(2026, 3, 4, 3, 6, 7, 123456, tzinfo=UTC)
    nil = parsed(b"<14>1 - - - - - - only a message")
    assert (nil.timestamp, nil.hostname, nil.app_name, nil.message) == (None, None, None, "only a message")
    _, record = to_log_record(nil)
    assert record.time_unix_nano == 0
    assert record.observed_time_unix_nano == int(RECEIVED.timestamp()) * 10**9 + 890123000


@pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger is not installed")
def test_what_util_linux_logger_sends_over_udp_and_tcp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        port = str(udp.getsockname()[1])
        base = ["logger", "-d", "-n", "127.0.0.1", "-P", port, "-t", "myapp", "-i", "-p", "local3.warning"]
        sd = ["--sd-id", "zoo@123", "--sd-param", 'tiger="hungry \\"cat\\""']
        subprocess.run([*base, "--rfc5424", *sd, "hello 5424"], check=True, timeout=10)
        rfc5424 = parsed(udp.recv(65536))
        subprocess.run([*base, "--rfc3164", "hello 3164"], check=True, timeout=10)
        rfc3164 = parsed(udp.recv(65536))
    hostname = socket.gethostname().split(".")[0]
    assert rfc5424.parse_error is None
    assert (rfc5424.format, rfc5424.facility, rfc5424.severity, rfc5424.app_name) == ("rfc5424", 19, 4, "myapp")
    assert rfc5424.hostname is not None
    assert rfc5424.hostname.startswith(hostname)
    assert rfc5424.procid is not None
    assert rfc5424.procid.isdigit()
    assert ("zoo@123", [("tiger", 'hungry "cat"')]) in rfc5424.structured_data
    assert rfc5424.message == "hello 5424"
    assert rfc5424.timestamp is not None
    assert abs(rfc5424.timestamp - datetime.now(UTC)) < timedelta(minutes=1)
    assert (rfc3164.format, rfc3164.hostname, rfc3164.app_name, rfc3164.message) == (
        "rfc3164",
        hostname,
        "myapp",
        "hello 3164",
    )
    assert rfc3164.procid is not None
    assert rfc3164.procid.isdigit()

    # Over TCP with octet counting: the frame the framer cuts is the message logger sent.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(10)
        tcp_port = str(listener.getsockname()[1])
        sender = subprocess.Popen(
            ["logger", "-T", "--octet-count", "--rfc5424", "-n", "127.0.0.1", "-P", tcp_port, "-t", "tcpapp", "a b"]
        )
        connection, _ = listener.accept()
        framer, frames, chunk = Framer(), [], b"x"
        with connection:
            connection.settimeout(10)
            while chunk:
                chunk = connection.recv(65536)
                frames += framer.feed(chunk)
        assert sender.wait(timeout=10) == 0
    assert framer.octet_counting is True
    assert [(m.app_name, m.message) for m in map(parsed, frames + framer.close())] == [("tcpapp", "a b")]


def test_what_pythons_sysloghandler_sends_over_udp_and_tcp() -> None:
    logger = logging.getLogger("tests.collector.syslog")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        handler = logging.handlers.SysLogHandler(address=udp.getsockname())
        logger.addHandler(handler)
        try:
            logger.info("hello")
            plain = udp.recv(65536)
            handler.setFormatter(logging.Formatter("myapp: %(message)s"))
            logger.error("boom")
            tagged = udp.recv(65536)
        finally:
            logger.removeHandler(handler)
            handler.close()
    assert (plain, tagged) == (b"<14>hello\x00", b"<11>myapp: boom\x00")
    hello, boom = parsed(plain), parsed(tagged)
    assert (hello.format, hello.severity, hello.facility, hello.app_name, hello.message) == (
        "rfc3164",
        6,
        1,
        None,
        "hello",
    )
    assert (boom.severity, boom.app_name, boom.hostname, boom.message) == (3, "myapp", None, "boom")

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(10)
        handler = logging.handlers.SysLogHandler(address=listener.getsockname(), socktype=socket.SOCK_STREAM)
        connection, _ = listener.accept()
        logger.addHandler(handler)
        try:
            logger.warning("first")
            logger.debug("second")
        finally:
            logger.removeHandler(handler)
            handler.close()
        framer, frames, chunk = Framer(), [], b"x"
        with connection:
            while chunk:
                chunk = connection.recv(65536)
                frames += framer.feed(chunk)
    assert framer.octet_counting is False
    assert [(m.severity, m.message) for m in map(parsed, frames + framer.close())] == [(4, "first"), (7, "second")]


def test_rsyslog_omfwd_formats() -> None:
    protocol23 = parsed(b"<30>1 2026-03-04T05:06:05.123456+01:00 web1 systemd 1 - - Started Session 5 of user alice.\n")
    assert (protocol23.hostname, protocol23.app_name, protocol23.procid, protocol23.severity) == (
        "web1",
        "systemd",
        "1",
        6,
    )
    assert protocol23.timestamp == datetime(2026, 3, 4, 4, 6, 5, 123456, tzinfo=UTC)
    # RSYSLOG_ForwardFormat (omfwd's default): BSD layout with an RFC 3339 timestamp.
    forward = parsed(b"<86>2026-03-04T05:06:05.654321+00:00 web1 sshd[4242]: Accepted publickey for alice")
    assert (forward.format, forward.hostname, forward.app_name, forward.procid, forward.facility) == (
        "rfc3164",
        "web1",
        "sshd",
        "4242",
        10,
    )
    assert forward.timestamp == datetime(2026, 3, 4, 5, 6, 5, 654321, tzinfo=UTC)
    assert forward.message == "Accepted publickey for alice"
    # RSYSLOG_TraditionalForwardFormat, with the single-digit day's double space.
    traditional = parsed(b"<13>Mar  4 05:06:01 web1 CRON[77]: (root) CMD (run-parts /etc/cron.hourly)")
    assert traditional.timestamp == datetime(2026, 3, 4, 5, 6, 1, tzinfo=UTC)
    assert (traditional.hostname, traditional.app_name, traditional.procid) == ("web1", "CRON", "77")
    assert traditional.message == "(root) CMD (run-parts /etc/cron.hourly)"
    # Local senders (the /dev/log layout) go straight from timestamp to tag.
    local = parsed(b"<38>Mar  4 05:06:01 sudo: alice : TTY=pts/0 ; COMMAND=/bin/true")
    assert (local.hostname, local.app_name, local.message) == (None, "sudo", "alice : TTY=pts/0 ; COMMAND=/bin/true")


def test_rfc3164_year_comes_from_the_receive_time_across_new_year() -> None:
    new_year = datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC)
    december = parsed(b"<13>Dec 31 23:59:58 h app: late", received_at=new_year)
    assert december.timestamp == datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC)
    january = parsed(b"<13>Jan  1 00:00:01 h app: early", received_at=datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert january.timestamp == datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)
    paris = timezone(timedelta(hours=1))
    local = parse(b"<13>Jan  1 00:00:01 h app: x", received_at=new_year, source_tag="s", peer=None, local_tz=paris)
    assert local.timestamp == datetime(2026, 12, 31, 23, 0, 1, tzinfo=UTC)
    leap = parsed(b"<13>Feb 29 12:00:00 h app: leap", received_at=datetime(2029, 3, 1, tzinfo=UTC))
    assert leap.timestamp == datetime(2028, 2, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"no priority at all\n", "no <PRI>"),
        (b"<192>1 2026-03-04T05:06:07Z h a - - - out of range", "out of range"),
        (b"<14>1 2026-03-04T05:06:07Z h a - - [x@1 a=unquoted] m", "PARAM-NAME"),
        (b'<14>1 2026-03-04T05:06:07Z h a - - [x@1 a="open] m', "unterminated"),
        (b"<14>1 2026-13-04T05:06:07Z h a - - - bad month", "TIMESTAMP"),
        (b"<14>1 yesterday h a - - - m", "TIMESTAMP"),
        (b"<14>1 2026-03-04T05:06:07Z h a - - -x", "space before MSG"),
        (b"\xff\xfe<14>binary\x00", "no <PRI>"),
    ],
)
def test_a_line_that_does_not_parse_is_kept_raw(line: bytes, reason: str) -> None:
    message = parsed(line)
    assert message.format is None
    assert message.severity is None
    assert message.parse_error is not None
    assert reason in message.parse_error
    assert message.message == line.rstrip(b"\n\x00").decode("utf-8", errors="replace")
    resource, record = to_log_record(message)
    assert record.body.string_value == message.message
    assert record.severity_number == SeverityNumber.SEVERITY_NUMBER_UNSPECIFIED
    assert record.severity_text == ""
    assert attributes(record)["syslog.parse_error"] == message.parse_error
    assert attributes(record)["observe.source"] == "edge"
    assert resource == {}


def test_to_otlp_maps_as_the_data_model_appendix_says() -> None:
    lines = [
        b'<165>1 2003-10-11T22:14:15.003Z mymachine evntslog 77 ID47 [exampleSDID@32473 iut="3" iut="4" '
        b'eventSource="Application"][origin ip="192.0.2.1" ip="192.0.2.2" swVersion="1.2" software="x"] entry',
        b"<11>Mar  4 05:06:01 mymachine evntslog: second from the same source",
        b"<14>headerless",
    ] + [b"<%d>1 - h a - - - s" % severity for severity in range(8)]
    request = to_otlp(parsed(line) for line in lines)
    by_resource = {
        tuple((kv.key, kv.value.string_value) for kv in group.resource.attributes): group
        for group in request.resource_logs
    }
    assert set(by_resource) == {
        (("host.name", "mymachine"), ("service.name", "evntslog"), ("service.version", "1.2")),
        (("host.name", "mymachine"), ("service.name", "evntslog")),
        (),
        (("host.name", "h"), ("service.name", "a")),
    }
    (scope,) = by_resource[
        (("host.name", "mymachine"), ("service.name", "evntslog"), ("service.version", "1.2"))
    ].scope_logs
    assert scope.scope.name == "observe.collector.syslog"
    (entry,) = scope.log_records
    assert entry.body.string_value == "entry"
    assert entry.time_unix_nano == 1065910455003000000
    assert entry.observed_time_unix_nano == 1772600767890123000
    assert (entry.severity_number, entry.severity_text) == (SeverityNumber.SEVERITY_NUMBER_INFO2, "notice")
    assert attributes(entry) == {
        "observe.source": "edge",
        "network.peer.address": "192.0.2.7",
        "syslog.facility": 20,
        "syslog.version": 1,
        "syslog.procid": "77",
        "syslog.msgid": "ID47",
        "syslog.structured_data.exampleSDID@32473.iut": ["3", "4"],
        "syslog.structured_data.exampleSDID@32473.eventSource": "Application",
        "client.address": ["192.0.2.1", "192.0.2.2"],
        "syslog.structured_data.origin.software": "x",
    }
    (bsd,) = by_resource[(("host.name", "mymachine"), ("service.name", "evntslog"))].scope_logs[0].log_records
    assert "syslog.version" not in attributes(bsd)
    assert bsd.severity_text == "err"
    severities = [
        (r.severity_number, r.severity_text)
        for r in by_resource[(("host.name", "h"), ("service.name", "a"))].scope_logs[0].log_records
    ]
    assert severities == [
        (SeverityNumber.SEVERITY_NUMBER_FATAL, "emerg"),
        (SeverityNumber.SEVERITY_NUMBER_ERROR3, "alert"),
        (SeverityNumber.SEVERITY_NUMBER_ERROR2, "crit"),
        (SeverityNumber.SEVERITY_NUMBER_ERROR, "err"),
        (SeverityNumber.SEVERITY_NUMBER_WARN, "warning"),
        (SeverityNumber.SEVERITY_NUMBER_INFO2, "notice"),
        (SeverityNumber.SEVERITY_NUMBER_INFO, "info"),
        (SeverityNumber.SEVERITY_NUMBER_DEBUG, "debug"),
    ]
    assert type(request).FromString(request.SerializeToString()) == request


def frames_of(stream: bytes, chunks: list[int], *, max_frame_bytes: int = 1024) -> tuple[list[bytes], Framer]:
    framer = Framer(max_frame_bytes=max_frame_bytes)
    frames: list[bytes] = []
    start = 0
    for end in [*chunks, len(stream)]:
        frames += framer.feed(stream[start:end])
        start = end
    return frames + framer.close(), framer


def octet_counted(*messages: bytes) -> bytes:
    return b"".join(b"%d %s" % (len(message), message) for message in messages)


MESSAGES = [b"<14>1 - h a - - - one", b"<13>two\nlines", b"<11>x: 3"]


def test_framing_survives_every_split_point_of_a_stream() -> None:
    counted = octet_counted(*MESSAGES)
    delimited = b"<14>a\n<13>b\x00\n<11>c\r\n<14>unterminated"
    for split in range(len(counted) + 1):
        for second in (split, min(split + 1, len(counted))):
            assert frames_of(counted, [split, second])[0] == MESSAGES, (split, second)
    for split in range(len(delimited) + 1):
        frames, framer = frames_of(delimited, [split])
        assert frames == [b"<14>a", b"<13>b", b"<11>c\r", b"<14>unterminated"], split
        assert framer.octet_counting is False
    byte_by_byte, _ = frames_of(counted, list(range(1, len(counted))))
    assert byte_by_byte == MESSAGES


def test_oversized_frames_are_cut_counted_and_the_stream_goes_on() -> None:
    big = b"<14>" + b"x" * 100
    counted = octet_counted(MESSAGES[0], big, MESSAGES[2])
    delimited = b"<14>a\n" + big + b"\n<11>c\n"
    for stream, chunks in ((counted, [10]), (counted, list(range(1, len(counted)))), (delimited, [40, 80])):
        frames, framer = frames_of(stream, chunks, max_frame_bytes=32)
        assert framer.oversized == 1
        assert framer.malformed == 0
        assert frames == [frames[0], big[:32], frames[2]], chunks
    frames, framer = frames_of(delimited, [], max_frame_bytes=32)
    assert (frames, framer.oversized) == ([b"<14>a", big[:32], b"<11>c"], 1)


def test_a_malformed_octet_count_is_counted_and_the_framer_resyncs_at_the_next_newline() -> None:
    stream = octet_counted(MESSAGES[0]) + b"\n12x <14>junk\n" + octet_counted(MESSAGES[2]) + b"\n0 \n"
    for split in range(len(stream) + 1):
        frames, framer = frames_of(stream, [split])
        assert frames == [MESSAGES[0], MESSAGES[2]], split
        assert framer.malformed == 2
        assert framer.oversized == 0
    endless, framer = frames_of(b"5 <14>a" + b"9" * 20 + b" x\n5 <14>b", [])
    assert endless == [b"<14>a", b"<14>b"]
    assert framer.malformed == 1


def test_the_wire_encoder_writes_exactly_what_the_protobuf_runtime_writes() -> None:
    """`encode_request` (collector/otlp_wire.py, the hot path) against `to_otlp` through the runtime."""
    from bench.collector import messages as bench_messages

    lines = [
        b'<165>1 2003-10-11T22:14:15.003Z mymachine evntslog 77 ID47 [exampleSDID@32473 iut="3" iut="4" '
        b'eventSource="Application"][origin ip="192.0.2.1" ip="192.0.2.2" swVersion="1.2" software="x"] entry',
        b"<11>Mar  4 05:06:01 mymachine evntslog: second from the same source",
        b"<14>headerless",
        b"<14>1 - - - - - -",  # every field NIL, an empty message
        b"<0>1 1970-01-01T00:00:00Z - - - - - epoch",
        b'<191>1 2026-11-30T10:00:00+05:30 h a p m [x@1 k="' + "é∑😀".encode() * 50 + b'"] ' + b"long " * 100,
        b"not syslog at all \xff\xfe",
        b"<999>1 - - - - - - out of range",
        "<13>1 - host app - - - \ufeffwith a BOM and ünïcödé".encode(),
        *bench_messages(300),
    ]
    for peer in ("192.0.2.7", None):
        parsed_lines = [parse(line, received_at=RECEIVED, source_tag="edge", peer=peer) for line in lines]
        parsed_lines.append(parse(b"<14>later", received_at=RECEIVED + timedelta(seconds=1), source_tag="x", peer=peer))
        expected = to_otlp(parsed_lines)
        encoded = encode_request(parsed_lines)
        assert ExportLogsServiceRequest.FromString(encoded) == expected
        assert encoded == expected.SerializeToString()


@pytest.mark.parametrize("stamp", [b"1960-01-01T00:00:00Z", b"2600-01-01T00:00:00Z", b"1970-01-01T00:00:00+01:00"])
def test_a_time_otlp_cannot_carry_is_kept_raw_not_a_failed_batch(stamp: bytes) -> None:
    message = parsed(b"<14>1 " + stamp + b" h a - - - far out")
    assert message.parse_error is not None
    assert "outside" in message.parse_error
    assert message.message.endswith("far out")
    assert message.timestamp is None
    assert ExportLogsServiceRequest.FromString(encode_request([message])) == to_otlp([message])
