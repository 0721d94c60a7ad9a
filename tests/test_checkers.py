"""Checkers against real servers each test starts on this machine: HTTP(S), TCP, DNS and ICMP.

Nothing leaves the machine. Names resolve through a local DNS server (tests/dns_servers.py), made the
server's resolver the way an operator would, with ``OBSERVE_DNS_SERVERS``. Where a test needs a public
address (a first hop that the target policy allows), :class:`Internet` plays the internet at the outermost
boundary, the event loop: it delivers connections to ``PUBLIC_IP`` to this machine, the way a NAT would.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from core.checks import resolver, run_check, targets, tls
from core.checks.base import CheckResult, CheckSpec
from tests.conftest import free_port
from tests.dns_servers import PUBLIC_IP, zone_server


def check(spec: CheckSpec, loop_factory: Any = None) -> CheckResult:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run_check(spec))


class Internet(asyncio.SelectorEventLoop):
    async def create_connection(self, protocol_factory, host=None, port=None, **kwargs):
        host = "127.0.0.1" if host == PUBLIC_IP else host
        return await super().create_connection(protocol_factory, host, port, **kwargs)


@pytest.fixture(scope="module")
def nameserver() -> Iterator[str]:
    with zone_server() as address:
        yield address


@pytest.fixture
def dns_servers(nameserver: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Makes ``nameserver`` the server's resolver (OBSERVE_DNS_SERVERS); yields its address."""
    monkeypatch.setenv(resolver.DNS_SERVERS_ENV, nameserver)
    resolver.server_resolver.cache_clear()
    yield nameserver
    resolver.server_resolver.cache_clear()


class Handler(BaseHTTPRequestHandler):
    """``/ok`` 200 "hello world", ``/status/N``, ``/slow``, ``/redirect?to=URL``, ``/loop``, ``/echo``."""

    server: Site

    def handle_one(self) -> None:
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == "/echo":
            self.server.seen.append({"method": self.command, "headers": dict(self.headers), "body": body.decode()})
            self.reply(200, b"echoed")
        elif path.startswith("/status/"):
            self.reply(int(path.removeprefix("/status/")), b"as you asked")
        elif path == "/slow":
            time.sleep(2)
            self.reply(200, b"too late")
        elif path == "/redirect":
            self.reply(302, b"", location=query.removeprefix("to="))
        elif path == "/loop":
            self.reply(302, b"", location="/loop")
        else:
            self.reply(200, b"<html>hello world</html>")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_one  # noqa: N815 (http.server's names)

    def reply(self, status: int, body: bytes, location: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Site(ThreadingHTTPServer):
    seen: list[dict[str, Any]]


def serve(context: ssl.SSLContext | None = None) -> Site:
    site = Site(("127.0.0.1", 0), Handler)
    site.seen = []
    if context is not None:
        site.socket = context.wrap_socket(site.socket, server_side=True)
    threading.Thread(target=site.serve_forever, args=(0.05,), daemon=True).start()
    return site


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = serve()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def echo() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = serve()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.seen
    server.shutdown()


def http(url: str, **fields: Any) -> CheckSpec:
    return CheckSpec(**{"type": "http", "timeout_ms": 2000, "url": url, "allow_private": True, **fields})


# HTTP


def test_it_is_up_on_200_and_times_each_phase(site: str) -> None:
    result = check(http(f"{site}/ok"))
    assert result.ok, result.error
    assert result.status_code == 200
    assert {"dns", "connect", "first_byte"} <= result.timings.keys()
    assert result.resolved_ip == "127.0.0.1"
    assert result.response_ms is not None
    assert result.response_ms >= result.timings["first_byte"]


def test_it_is_down_on_500(site: str) -> None:
    result = check(http(f"{site}/status/500"))
    assert (result.ok, result.reason, result.status_code) == (False, "status", 500)
    assert result.error == "HTTP 500, expected 2xx or 3xx"


def test_it_accepts_only_the_expected_statuses(site: str) -> None:
    assert check(http(f"{site}/status/500", expected_status=frozenset({500}))).ok
    result = check(http(f"{site}/ok", expected_status=frozenset({201, 204})))
    assert (result.reason, result.error) == ("status", "HTTP 200, expected 201, 204")


def test_it_times_out_on_a_slow_server(site: str) -> None:
    result = check(http(f"{site}/slow", timeout_ms=300))
    assert (result.ok, result.reason, result.error) == (False, "timeout", "timed out after 300 ms")
    assert result.response_ms is not None
    assert 290 <= result.response_ms < 1500
    assert "connect" in result.timings  # the phases before the timeout are kept


def test_it_refuses_a_redirect_into_the_private_network(site: str, dns_servers: str) -> None:
    port = site.rsplit(":", 1)[1]
    spec = http(f"http://public.test:{port}/redirect?to={site}/ok", allow_private=False)
    result = check(spec, Internet)
    assert (result.ok, result.reason) == (False, "target_not_allowed")
    assert result.error is not None
    assert result.error.startswith("127.0.0.1 is not a public address")
    assert result.resolved_ip == PUBLIC_IP  # the first hop was allowed and made


def test_it_follows_a_redirect_into_the_private_network_when_allowed(site: str, dns_servers: str) -> None:
    port = site.rsplit(":", 1)[1]
    result = check(http(f"http://public.test:{port}/redirect?to={site}/ok"), Internet)
    assert result.ok, result.error
    assert (result.status_code, result.resolved_ip) == (200, "127.0.0.1")


def test_it_keeps_credentials_from_another_host(echo: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = echo
    port = url.rsplit(":", 1)[1]
    spec = http(f"http://{PUBLIC_IP}:{port}/redirect?to={url}/echo", headers=(("Authorization", "Bearer s3cret"),))
    assert check(spec, Internet).ok
    assert "Authorization" not in seen[0]["headers"]


SECRET_HEADERS = (("X-Api-Key", "k3y"), ("Authorization", "Bearer s3cret"), ("Cookie", "session=abc"))


def test_it_sends_none_of_its_headers_to_another_port() -> None:
    first, second = serve(), serve()
    here, there = (f"http://127.0.0.1:{s.server_address[1]}" for s in (first, second))
    try:
        assert check(http(f"{here}/redirect?to={there}/echo", headers=SECRET_HEADERS)).ok
        # and none come back when a later hop returns to the origin the monitor named
        assert check(http(f"{here}/redirect?to={there}/redirect?to={here}/echo", headers=SECRET_HEADERS)).ok
    finally:
        first.shutdown()
        second.shutdown()
    sent = [second.seen[0]["headers"], first.seen[0]["headers"]]
    assert all(name not in headers for headers in sent for name, _ in SECRET_HEADERS), sent


def test_it_keeps_its_headers_on_a_same_origin_redirect(echo: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = echo
    assert check(http(f"{url}/redirect?to=/echo", headers=SECRET_HEADERS)).ok
    assert check(http(f"{url}/redirect?to={url.upper()}/echo", headers=SECRET_HEADERS)).ok  # HTTP://127.0.0.1:…
    for request in seen:
        assert {name: request["headers"].get(name) for name, _ in SECRET_HEADERS} == dict(SECRET_HEADERS)
    assert len(seen) == 2


def test_it_judges_a_redirect_itself_when_not_following(site: str) -> None:
    result = check(http(f"{site}/loop", max_redirects=0))
    assert (result.ok, result.status_code) == (True, 302)


def test_it_gives_up_on_a_redirect_loop(site: str) -> None:
    result = check(http(f"{site}/loop", max_redirects=3))
    assert (result.ok, result.reason, result.status_code) == (False, "too_many_redirects", 302)
    assert result.error == "more than 3 redirects (last to /loop)"


def test_it_finds_the_keyword(site: str) -> None:
    assert check(http(f"{site}/ok", type="keyword", keyword="hello world")).ok
    result = check(http(f"{site}/ok", type="keyword", keyword="goodbye"))
    assert (result.ok, result.reason, result.error) == (False, "keyword", "keyword 'goodbye' not found in the response")


def test_it_inverts_the_keyword(site: str) -> None:
    assert check(http(f"{site}/ok", type="keyword", keyword="error", keyword_inverted=True)).ok
    result = check(http(f"{site}/ok", type="keyword", keyword="hello", keyword_inverted=True))
    assert (result.ok, result.reason, result.error) == (False, "keyword", "keyword 'hello' found in the response")


def test_it_sends_the_method_headers_and_body(echo: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = echo
    spec = http(f"{url}/echo", method="put", headers=(("X-Token", "abc"),), body='{"a": 1}')
    assert check(spec).ok
    assert seen[0]["method"] == "PUT"
    assert seen[0]["headers"]["X-Token"] == "abc"
    assert json.loads(seen[0]["body"]) == {"a": 1}
    assert seen[0]["headers"]["Host"] == url.removeprefix("http://")


def test_it_refuses_loopback_unless_allowed(site: str) -> None:
    result = check(http(f"{site}/ok", allow_private=False))
    assert (result.ok, result.reason, result.timings) == (False, "target_not_allowed", {})


def test_it_says_when_a_name_does_not_resolve(dns_servers: str) -> None:
    result = check(http("http://missing.test/"))
    assert (result.ok, result.reason) == (False, "dns")
    assert result.error == "could not resolve missing.test: Name or service not known"


def test_it_refuses_a_name_with_any_private_address_without_naming_it(dns_servers: str) -> None:
    result = check(http("http://rebinding.test/", allow_private=False))
    assert (result.ok, result.reason, result.timings) == (False, "target_not_allowed", {})
    assert result.error == (
        "rebinding.test resolves to a private or reserved address: not allowed (monitors may only reach public hosts)"
    )


# HTTPS and TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusted(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[trustme.CA]:
    """Makes ``ca`` a trust anchor of the checkers, the way an operator would with OBSERVE_EXTRA_CA_FILE."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv(tls.EXTRA_CA_ENV, str(tmp_path / "ca.pem"))
    tls.client_context.cache_clear()
    yield ca
    tls.client_context.cache_clear()


def https_site(
    ca: trustme.CA, not_after: datetime | None = None, names: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> tuple[str, Site]:
    cert = ca.issue_cert(*names, not_after=not_after)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server = serve(context)
    return f"https://localhost:{server.server_address[1]}", server


def test_https_is_up_with_a_trusted_certificate(trusted: trustme.CA) -> None:
    url, server = https_site(trusted, not_after=datetime(2040, 1, 2, 3, 4, 5, tzinfo=UTC))
    result = check(http(f"{url}/ok", type="https"))
    server.shutdown()
    assert result.ok, result.error
    assert {"dns", "connect", "tls", "first_byte"} <= result.timings.keys()
    assert result.cert_expires_at == datetime(2040, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_https_is_down_with_an_untrusted_certificate(trusted: trustme.CA) -> None:
    url, server = https_site(trustme.CA())
    result = check(http(f"{url}/ok", type="https"))
    server.shutdown()
    assert (result.ok, result.reason) == (False, "tls")
    assert result.error == "certificate verify failed: unable to get local issuer certificate"


def test_https_is_down_with_an_expired_certificate(trusted: trustme.CA) -> None:
    url, server = https_site(trusted, not_after=datetime.now(UTC) - timedelta(days=1))
    result = check(http(f"{url}/ok", type="https"))
    server.shutdown()
    assert (result.ok, result.reason) == (False, "tls")
    assert result.error == "certificate verify failed: certificate has expired"


def test_https_ignores_tls_errors_when_told() -> None:
    url, server = https_site(trustme.CA(), not_after=datetime(2039, 5, 6, tzinfo=UTC))
    result = check(http(f"{url}/ok", type="https", ignore_tls_errors=True))
    server.shutdown()
    assert result.ok, result.error
    assert result.cert_expires_at == datetime(2039, 5, 6, tzinfo=UTC)


def tls_spec(url: str, **fields: Any) -> CheckSpec:
    return CheckSpec(**{"type": "tls", "timeout_ms": 2000, "url": url, "allow_private": True, **fields})


def test_tls_is_up_with_a_long_valid_certificate(trusted: trustme.CA) -> None:
    url, server = https_site(trusted, not_after=datetime.now(UTC) + timedelta(days=90))
    result = check(tls_spec(url, tls_expiry_days=14))
    server.shutdown()
    assert result.ok, result.error
    assert {"dns", "connect", "tls"} <= result.timings.keys()


def test_tls_warns_of_a_certificate_expiring_soon(trusted: trustme.CA) -> None:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    url, server = https_site(trusted, not_after=expires)
    result = check(tls_spec(url, tls_expiry_days=14))
    server.shutdown()
    assert (result.ok, result.reason, result.cert_expires_at) == (False, "cert_expiring", expires)
    assert result.error == f"certificate expires in 3 days ({expires:%Y-%m-%d %H:%M} UTC)"


def test_tls_names_the_verification_error(trusted: trustme.CA) -> None:
    url, server = https_site(trusted, names=("example.org",))
    result = check(tls_spec(url))
    server.shutdown()
    assert (result.ok, result.reason) == (False, "tls")
    assert result.error is not None
    assert "Hostname mismatch" in result.error


def test_tls_reports_expiry_even_when_ignoring_errors() -> None:
    url, server = https_site(trustme.CA(), not_after=datetime.now(UTC) - timedelta(days=2, hours=1))
    result = check(tls_spec(url, ignore_tls_errors=True))
    server.shutdown()
    assert (result.ok, result.reason) == (False, "cert_expiring")
    assert result.error is not None
    assert result.error.startswith("certificate expired 3 days ago")


# TCP


def test_tcp_is_up_when_the_port_accepts() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        spec = CheckSpec(
            type="tcp", timeout_ms=2000, host="127.0.0.1", port=listener.getsockname()[1], allow_private=True
        )
        result = check(spec)
    assert result.ok, result.error
    assert {"dns", "connect"} <= result.timings.keys()


def test_tcp_is_refused_on_a_closed_port() -> None:
    spec = CheckSpec(type="tcp", timeout_ms=2000, host="127.0.0.1", port=free_port(), allow_private=True)
    result = check(spec)
    assert (result.ok, result.reason, result.error) == (False, "refused", "connection refused")


def test_tcp_refuses_loopback_unless_allowed() -> None:
    result = check(CheckSpec(type="tcp", timeout_ms=2000, host="localhost", port=22))
    assert (result.ok, result.reason) == (False, "target_not_allowed")
    assert result.error is not None
    assert result.error.startswith("localhost resolves to a private or reserved address: not allowed")


# DNS


def dns_spec(resolver: str, host: str = "ok.test", **fields: Any) -> CheckSpec:
    return CheckSpec(
        **{"type": "dns", "timeout_ms": 2000, "host": host, "dns_resolver": resolver, "allow_private": True, **fields}
    )


def test_dns_is_up_when_the_answer_matches(nameserver: str) -> None:
    result = check(dns_spec(nameserver, expected_value="192.0.2.10"))
    assert result.ok, result.error
    assert "dns" in result.timings


def test_dns_compares_mx_and_txt_answers_normalised(nameserver: str) -> None:
    assert check(dns_spec(nameserver, dns_record_type="MX", expected_value="mail.ok.test")).ok
    assert check(dns_spec(nameserver, dns_record_type="MX", expected_value="10 MAIL.ok.test.")).ok
    assert check(dns_spec(nameserver, dns_record_type="TXT", expected_value="v=spf1 -all")).ok


def test_dns_is_down_when_the_answer_differs(nameserver: str) -> None:
    result = check(dns_spec(nameserver, expected_value="192.0.2.99"))
    assert (result.ok, result.reason, result.error) == (False, "dns_mismatch", "expected '192.0.2.99', got 192.0.2.10")


def test_dns_is_down_when_the_name_does_not_exist(nameserver: str) -> None:
    result = check(dns_spec(nameserver, host="missing.test"))
    assert (result.ok, result.reason, result.error) == (False, "dns", "missing.test does not exist (NXDOMAIN)")


def test_dns_is_down_when_there_are_no_such_records(nameserver: str) -> None:
    result = check(dns_spec(nameserver, dns_record_type="AAAA"))
    assert (result.ok, result.reason, result.error) == (False, "dns", "ok.test has no AAAA records")


def test_dns_refuses_a_private_resolver_unless_allowed(nameserver: str) -> None:
    result = check(dns_spec(nameserver, allow_private=False))
    assert (result.ok, result.reason) == (False, "target_not_allowed")


# Ping


def test_ping_answers_or_says_it_may_not() -> None:
    result = check(CheckSpec(type="ping", timeout_ms=2000, host="127.0.0.1", allow_private=True))
    if result.ok:
        assert result.response_ms is not None
        assert 0 < result.response_ms < 2000
        assert result.resolved_ip == "127.0.0.1"
    else:
        assert result.reason == "ping_not_permitted"
        assert result.error is not None
        assert "net.ipv4.ping_group_range" in result.error


# Safe targets


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:7f00:1", True),
        ("::127.0.0.1", True),  # IPv4-compatible
        ("0.0.0.0", True),
        ("::", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("100.64.1.1", True),
        ("169.254.169.254", True),
        ("100.100.100.200", True),
        ("fd00:ec2::254", True),
        ("fe80::1", True),
        ("fec0::1", True),
        ("224.0.0.1", True),
        ("ff02::1", True),
        ("255.255.255.255", True),
        ("240.0.0.1", True),
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("8.8.8.8", False),
        ("2606:4700::1111", False),
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::808:808", False),
        ("2002:808:808::", False),
    ],
)
def test_the_target_policy(address: str, forbidden: bool) -> None:
    assert targets.is_forbidden(ipaddress.ip_address(address)) is forbidden


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LocalHost.",
        "foo.localhost",
        "metadata.google.internal",
        "127.0.0.1",
        "127.1",
        "0x7f.1",
        "2130706433",
        "[::1]",
        "::ffff:127.0.0.1",
        "[::ffff:7f00:1]",
        "169.254.169.254",
    ],
)
def test_a_local_target_is_refused_when_saved(host: str) -> None:
    assert targets.static_target_problem(host) is not None


@pytest.mark.parametrize("host", ["example.com", "8.8.8.8", "[2606:4700::1111]", "cafe.be"])
def test_a_public_target_is_accepted_when_saved(host: str) -> None:
    assert targets.static_target_problem(host) is None


def test_resolve_judges_literals_and_hosts_file_names() -> None:
    async def run() -> None:
        with pytest.raises(targets.TargetNotAllowed, match=r"^127\.1 is not a public address"):
            await targets.resolve("127.1", allow_private=False, timeout=2)
        assert await targets.resolve("0x7f.1", allow_private=True, timeout=2) == ["127.0.0.1"]
        with pytest.raises(targets.TargetNotAllowed):
            await targets.resolve("localhost", allow_private=False, timeout=2)
        assert "127.0.0.1" in await targets.resolve("localhost", allow_private=True, timeout=2)  # /etc/hosts
        assert await targets.resolve("[2606:4700::1111]", allow_private=False, timeout=2) == ["2606:4700::1111"]

    asyncio.run(run())
