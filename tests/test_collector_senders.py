"""Syslog senders nobody here wrote, through the collector process to the real server.

- util-linux ``logger`` with ``--rfc5424`` and ``--rfc3164``, over UDP and over TCP (newline framing
  and ``--octet-count``);
- rsyslog (Debian's package): a ruleset that takes messages on a UDP port and forwards them with
  ``omfwd`` over TCP, octet-counted, in its RFC 5424 template (skipped, saying why, when rsyslogd is
  not installed: ``.ci/run`` installs it);
- a TLS client (Python's ``ssl``, a self-signed certificate made with ``cryptography``) on a
  ``tls://`` input, and a client that does not speak TLS, which must not stop the input.

Each record must be searchable on the server with the mapped fields.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import ROOT, SQLITE_ONLY, Persona, Server, free_port, register
from tests.test_collector_agent import metric, wait_for_records, wait_healthy

LOGGER = shutil.which("logger")
RSYSLOGD = shutil.which("rsyslogd") or next(
    (path for path in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(path, os.X_OK)), None
)


@dataclass
class Collector:
    owner: Persona
    ports: dict[str, int]
    cert: Path
    process: subprocess.Popen[bytes]


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


pytestmark = SQLITE_ONLY


@pytest.fixture(scope="module")
def collector(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    tmp = tmp_path_factory.mktemp("collector-senders")
    owner = register(server)
    token = owner.mint(name="collector", scopes=["logs:write"])["token"]
    cert, key = self_signed(tmp)
    ports = {name: free_port() for name in ("udp", "tcp", "tls", "metrics")}
    config = tmp / "collector.toml"
    config.write_text(
        f"""
[server]
endpoint = "grpc://{server.grpc_target}"
token = "{token}"
[buffer]
dir = "{tmp / "buffer"}"
[batch]
max_delay_ms = 50
[metrics]
listen = "127.0.0.1:{ports["metrics"]}"
[[inputs]]
type = "syslog"
listen = "udp://127.0.0.1:{ports["udp"]}"
tag = "udp"
max_frame_bytes = 2048
[[inputs]]
type = "syslog"
listen = "tcp://127.0.0.1:{ports["tcp"]}"
tag = "tcp"
max_frame_bytes = 2048
[[inputs]]
type = "syslog"
listen = "tls://127.0.0.1:{ports["tls"]}"
tag = "tls"
cert_file = "{cert}"
key_file = "{key}"
"""
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "collector", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(process, f"http://127.0.0.1:{ports['metrics']}")
        yield Collector(owner, ports, cert, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@pytest.mark.skipif(LOGGER is None, reason="util-linux logger is not installed")
def test_util_linux_logger_in_both_formats_over_udp_and_tcp(collector: Collector) -> None:
    assert LOGGER is not None
    run = uuid.uuid4().hex[:10]
    sends = {
        "rfc5424-udp": ["--rfc5424", "--udp", "-P", str(collector.ports["udp"])],
        "rfc3164-udp": ["--rfc3164", "--udp", "-P", str(collector.ports["udp"])],
        "rfc5424-tcp": ["--rfc5424", "--tcp", "-P", str(collector.ports["tcp"])],
        "rfc3164-tcp": ["--rfc3164", "--tcp", "-P", str(collector.ports["tcp"])],
        "octet-tcp": ["--rfc5424", "--tcp", "--octet-count", "-P", str(collector.ports["tcp"])],
    }
    processes = []
    for name, args in sends.items():
        extra = ["--sd-id", "zoo@32473", "--sd-param", 'tiger="hungry"', "--msgid", "MSG7"]
        extra = extra if "--rfc5424" in args else []
        command = [LOGGER, "-n", "127.0.0.1", *args, "-t", f"app-{name}", "-p", "local3.err", *extra]
        processes.append(subprocess.run([*command, f"logger{run} {name}"], capture_output=True, timeout=10))
    for done in processes:
        assert done.returncode == 0, done.stderr

    records = wait_for_records(collector.owner, f"logger{run}", len(sends))
    by_name = {str(record["message"]).split()[-1]: record for record in records}
    assert set(by_name) == set(sends)
    host = socket.gethostname()
    for name, record in by_name.items():
        attributes = record["attributes"]
        assert isinstance(attributes, dict)
        assert isinstance(record["resource"], dict)
        assert record["level"] == "error", record
        assert attributes["syslog.facility"] == 19  # local3
        assert record["resource"]["service.name"] == f"app-{name}"
        assert record["resource"]["host.name"].split(".")[0] == host.split(".")[0], record
        assert attributes["observe.source"] == name.rsplit("-", 1)[1]
        assert "syslog.parse_error" not in attributes
        if "--rfc5424" in sends[name]:
            assert attributes["syslog.msgid"] == "MSG7"
            assert attributes["syslog.structured_data.zoo@32473.tiger"] == "hungry"
            assert attributes["syslog.version"] == 1
        else:  # BSD timestamps have whole seconds: the sender's time, not the arrival's
            assert str(record["timestamp"]).endswith(".000Z"), record


@pytest.mark.skipif(RSYSLOGD is None, reason="rsyslogd is not installed (.ci/run installs Debian's rsyslog)")
def test_rsyslog_forwards_with_omfwd_over_tcp_octet_counted(collector: Collector, tmp_path: Path) -> None:
    assert RSYSLOGD is not None
    run = uuid.uuid4().hex[:10]
    port = free_port()
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(
        f"""
global(workDirectory="{tmp_path}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{port}" ruleset="forward")
ruleset(name="forward") {{
  action(type="omfwd" target="127.0.0.1" port="{collector.ports["tcp"]}" protocol="tcp"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
}}
"""
    )
    rsyslog = subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        minute = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            # rsyslog takes a moment to bind; a datagram before that is lost, so send until one arrives.
            deadline = time.monotonic() + 15
            lines = [
                f'<30>1 {minute:%Y-%m-%dT%H:%M}:0{i}.5Z web-{run} shop 42 ORDER [order@32473 id="{i}"] '
                f"rsys{run} line {i}"
                for i in range(3)
            ] + [f"<11>{minute:%b} {minute.day:2d} {minute:%H:%M}:05 web-{run} shop[7]: rsys{run} bsd line"]
            while True:
                for line in lines:
                    sender.sendto(line.encode(), ("127.0.0.1", port))
                try:
                    records = wait_for_records(collector.owner, f"rsys{run}", 4, within=1.0)
                    break
                except AssertionError:
                    assert rsyslog.poll() is None, rsyslog.stdout.read().decode() if rsyslog.stdout else ""
                    if time.monotonic() > deadline:
                        raise
    finally:
        rsyslog.terminate()
        rsyslog.wait(timeout=10)
        if rsyslog.stdout is not None:
            rsyslog.stdout.close()

    first = {str(record["message"]): record for record in records}
    for i in range(3):
        record = first[f"rsys{run} line {i}"]
        attributes = record["attributes"]
        assert isinstance(attributes, dict)
        assert record["resource"] == {"host.name": f"web-{run}", "service.name": "shop"}
        assert record["level"] == "info"
        assert attributes["syslog.procid"] == "42"
        assert attributes["syslog.msgid"] == "ORDER"
        assert attributes["syslog.structured_data.order@32473.id"] == str(i)
        assert attributes["observe.source"] == "tcp"
        assert str(record["timestamp"]).startswith(f"{minute:%Y-%m-%dT%H:%M}:0{i}.5")
    bsd = first[f" rsys{run} bsd line"]  # rsyslog's %msg% keeps the space after a BSD tag's colon
    assert bsd["level"] == "error"
    assert bsd["resource"]["service.name"] == "shop"  # type: ignore[index]
    assert str(bsd["timestamp"]).startswith(f"{minute:%Y-%m-%dT%H:%M}:05")


def test_tls_input_takes_octet_counted_messages_and_survives_a_client_without_tls(collector: Collector) -> None:
    run = uuid.uuid4().hex[:10]
    with socket.create_connection(("127.0.0.1", collector.ports["tls"])) as plain:
        plain.sendall(b"<14>1 - - - - - - not tls at all\n")  # a handshake failure for that connection only
    context = ssl.create_default_context(cafile=str(collector.cert))
    frames = [f"<13>1 - tls-host tlsapp - - - tls{run} line {i}".encode() for i in range(3)]
    with (
        socket.create_connection(("127.0.0.1", collector.ports["tls"])) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        tls.sendall(b"".join(b"%d %s" % (len(frame), frame) for frame in frames))
    records = wait_for_records(collector.owner, f"tls{run}", 3)
    assert sorted(str(record["message"]) for record in records) == [f"tls{run} line {i}" for i in range(3)]
    assert records[0]["resource"] == {"host.name": "tls-host", "service.name": "tlsapp"}
    assert records[0]["attributes"]["observe.source"] == "tls"  # type: ignore[index]
    assert collector.process.poll() is None


def test_malformed_and_oversized_frames_are_kept_or_cut_and_counted_and_the_input_goes_on(collector: Collector) -> None:
    run = uuid.uuid4().hex[:10]
    metrics_url = f"http://127.0.0.1:{collector.ports['metrics']}/metrics"
    before = httpx.get(metrics_url, timeout=5).text
    big = f"<14>1 - h bigapp - - - big{run} ".encode() + b"x" * 5000
    with socket.create_connection(("127.0.0.1", collector.ports["tcp"])) as tcp:
        tcp.sendall(
            b"%d %s" % (len(big), big)  # oversized: cut to 2,048 bytes
            + b"12x <14>garbage\n"  # a malformed octet count: skipped to the next newline
            + b"%d %s" % (len(f"not syslog raw{run}"), f"not syslog raw{run}".encode())  # kept raw
            + b"%d <13>1 - h okapp - - - ok%s tcp" % (len(f"<13>1 - h okapp - - - ok{run} tcp"), run.encode())
        )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(f"<14>1 - h bigapp - - - bigudp{run} ".encode() + b"y" * 3000, ("127.0.0.1", collector.ports["udp"]))
        udp.sendto(f"<13>1 - h okapp - - - ok{run} udp".encode(), ("127.0.0.1", collector.ports["udp"]))

    assert {str(r["message"]) for r in wait_for_records(collector.owner, f"ok{run}", 2)} == {
        f"ok{run} tcp",
        f"ok{run} udp",
    }
    (raw,) = wait_for_records(collector.owner, f"raw{run}", 1)
    assert raw["message"] == f"not syslog raw{run}"
    assert raw["attributes"]["syslog.parse_error"] == "no <PRI> at the start"  # type: ignore[index]
    cut = wait_for_records(collector.owner, f"big{run}", 1)[0]
    assert len(str(cut["message"])) == 2048 - len("<14>1 - h bigapp - - - ")
    assert wait_for_records(collector.owner, f"bigudp{run}", 1)
    after = httpx.get(metrics_url, timeout=5).text
    for tag, name, grew in (("tcp", "oversized", 1), ("tcp", "malformed", 1), ("udp", "oversized", 1)):
        full = f"observe_collector_{name}"
        assert metric(after, full, tag) - metric(before, full, tag) == grew, (tag, name)
    assert collector.process.poll() is None
