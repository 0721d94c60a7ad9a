"""Real DNS servers for checker tests, on this machine: a zone answering from a table, and a black hole.

:class:`Zone` answers A, AAAA, MX and TXT records from its table, NXDOMAIN for names it does not hold and
SERVFAIL for ``servfail.test``. Names under a delegated zone it forwards to that zone's server and waits, the
way a recursive resolver waits on an authoritative server: with a :class:`BlackHole` there, the question is
never answered in the time a check has.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dnslib import AAAA, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.conftest import free_port

PUBLIC_IP = "1.2.3.4"  # a global address; tests that connect to it deliver its connections to 127.0.0.1
RECORDS: dict[tuple[str, str], list[Any]] = {
    ("ok.test.", "A"): [A("192.0.2.10")],
    ("ok.test.", "MX"): [MX("Mail.Ok.Test.", 10)],
    ("ok.test.", "TXT"): [TXT(["v=spf1 ", "-all"])],
    ("public.test.", "A"): [A(PUBLIC_IP)],
    ("rebinding.test.", "A"): [A(PUBLIC_IP), A("127.0.0.1")],
    ("up.test.", "A"): [A("127.0.0.1")],
    ("private.test.", "A"): [A("10.1.2.3")],
    ("private.test.", "AAAA"): [AAAA("fd00::7")],
    ("3.2.1.10.in-addr.arpa.", "PTR"): [PTR("db.corp.example.")],
}
FORWARD_WAIT = 10.0  # seconds a forwarded question waits upstream: longer than any check's timeout


class Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self, delegations: dict[str, tuple[str, int]]) -> None:
        self.delegations = delegations  # "zone.test." → (address, port) of its server

    def resolve(self, request: Any, handler: Any) -> Any:
        name, kind = str(request.q.qname), QTYPE[request.q.qtype]
        for zone, (address, port) in self.delegations.items():
            if name.endswith("." + zone) or name == zone:
                try:
                    return DNSRecord.parse(request.send(address, port, timeout=FORWARD_WAIT))
                except OSError:  # the upstream never answered: what a recursive resolver says then
                    return _failure(request, RCODE.SERVFAIL)
        if name == "servfail.test.":
            return _failure(request, RCODE.SERVFAIL)
        if not any(held == name for held, _ in RECORDS):
            return _failure(request, RCODE.NXDOMAIN)
        reply = request.reply()
        for rdata in RECORDS.get((name, kind), []):
            reply.add_answer(RR(name, request.q.qtype, rdata=rdata, ttl=60))
        return reply


def _failure(request: Any, rcode: int) -> Any:
    reply = request.reply()
    reply.header.rcode = rcode
    return reply


@contextmanager
def zone_server(delegations: dict[str, tuple[str, int]] | None = None) -> Iterator[str]:
    """A :class:`Zone` on UDP 127.0.0.1; yields ``"127.0.0.1:port"``."""
    port = free_port()
    server = DNSServer(Zone(delegations or {}), address="127.0.0.1", port=port, logger=DNSLogger("-request,-reply"))
    server.start_thread()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def black_hole() -> Iterator[tuple[str, int]]:
    """A DNS server that takes every question, on UDP and TCP, and never answers; yields (address, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.create_server(("127.0.0.1", 0)) as tcp:
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))  # questions queue in its buffer, unread
        yield "127.0.0.1", port
