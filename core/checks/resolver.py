"""How checkers turn a name into addresses, without the event loop's resolver threads.

The event loop's getaddrinfo runs in its default executor: a handful of threads shared by every check of
every org. A few names whose DNS never answers hold them all, and every other monitor's lookups queue
behind them until they time out too. So names are looked up here instead: the hosts file first (as the C
library does), then A and AAAA queries through dnspython's asyncio resolver, each on its own socket and
bounded by the check's own timeout, so a hanging DNS server only delays the monitors that use it.

The server's DNS servers are those of ``/etc/resolv.conf`` (its search list applies, as for getaddrinfo),
or ``OBSERVE_DNS_SERVERS`` (comma-separated ``ip``, ``ip:port`` or ``[ipv6]:port``) when set; dns monitors
without a ``dnsResolver`` ask them too.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import socket
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

DNS_SERVERS_ENV = "OBSERVE_DNS_SERVERS"
HOSTS_FILE = Path("/etc/hosts")


def parse_server(text: str) -> tuple[str, int]:
    """A DNS server's address and port from ``ip``, ``ip:port`` or ``[ipv6]:port``; ValueError otherwise."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise ValueError(f"a DNS server must be an IP address, not {text!r}") from None


def resolver_at(servers: list[tuple[str, int]]) -> dns.asyncresolver.Resolver:
    """A resolver asking ``servers`` (address, port), in order, and nothing else."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port) for address, port in servers]
    return resolver


@functools.cache
def server_resolver() -> dns.asyncresolver.Resolver:
    """The server's resolver, built once (reading /etc/resolv.conf is the slow part); raises
    ``dns.resolver.NoResolverConfiguration`` when there is no DNS server to ask."""
    configured = [part for part in os.environ.get(DNS_SERVERS_ENV, "").split(",") if part.strip()]
    if configured:
        return resolver_at([parse_server(part) for part in configured])
    resolver = dns.asyncresolver.Resolver()
    resolver.use_search_by_default = True  # what getaddrinfo does with resolv.conf's search list
    return resolver


async def lookup(host: str, *, timeout: float) -> list[str]:  # noqa: ASYNC109 (the timeout is the resolver's lifetime)
    """The addresses of ``host``: IPv4 before IPv6, without duplicates.

    Raises ``socket.gaierror`` (glibc's wording in ``strerror``) when the name does not resolve and
    ``TimeoutError`` when no DNS server answered within ``timeout`` seconds.
    """
    listed = _hosts_file(HOSTS_FILE).get(host.rstrip(".").lower())
    if listed:
        return listed
    try:
        resolver = server_resolver()
    except dns.exception.DNSException:
        raise socket.gaierror(socket.EAI_AGAIN, f"no DNS server configured (set {DNS_SERVERS_ENV})") from None
    answers = await asyncio.gather(
        *(resolver.resolve(host, kind, lifetime=timeout, raise_on_no_answer=False) for kind in ("A", "AAAA")),
        return_exceptions=True,
    )
    addresses: list[str] = []
    for answer in answers:
        if isinstance(answer, dns.resolver.Answer):
            addresses.extend(str(rdata.address) for rdata in answer)
        elif not isinstance(answer, Exception):  # a BaseException (cancellation) is not an answer
            raise answer
    if addresses:
        return list(dict.fromkeys(addresses))
    failures = [answer for answer in answers if isinstance(answer, Exception)]
    if any(isinstance(failure, dns.exception.Timeout) for failure in failures):
        raise TimeoutError(f"no answer from the DNS server for {host} within {round(timeout * 1000)} ms")
    if any(isinstance(failure, dns.resolver.NoNameservers) for failure in failures):
        # SERVFAIL, REFUSED, unreachable: said without naming the server's own DNS servers, as dnspython would.
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    if failures:  # NXDOMAIN, or a name that cannot be asked (an empty or overlong label)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    raise socket.gaierror(socket.EAI_NODATA, "No address associated with hostname")


@functools.lru_cache(maxsize=1)
def _read_hosts(path: Path, mtime_ns: int) -> dict[str, list[str]]:
    """Names to addresses (IPv4 first, as :func:`lookup` orders them) from a hosts file of that version."""
    names: dict[str, list[str]] = {}
    for line in path.read_text(errors="replace").splitlines():
        fields = line.partition("#")[0].split()
        if len(fields) < 2:
            continue
        try:
            ip = ipaddress.ip_address(fields[0].partition("%")[0])  # fe80::1%eth0: the zone is no part of it
        except ValueError:
            continue
        for name in fields[1:]:
            names.setdefault(name.rstrip(".").lower(), []).append(str(ip))
    return {name: sorted(dict.fromkeys(ips), key=lambda ip: ":" in ip) for name, ips in names.items()}


def _hosts_file(path: Path) -> dict[str, list[str]]:
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError:
        return {}
    return _read_hosts(path, mtime_ns)
