"""Which addresses a monitor may reach: the guard that keeps checks from probing the server's own network.

A hosted checker that connects wherever a user points it is a server-side request forgery tool: it would
read cloud metadata credentials, poke admin ports on localhost and scan the private network. So every
checker connects only to addresses that :func:`resolve` returned, and :func:`resolve` refuses the lot when
any of them is forbidden. Judging the addresses actually connected to (not the name at create time) is what
defeats DNS rebinding; :func:`static_target_problem` only gives an early, friendly answer when a monitor is
saved. ``OBSERVE_ALLOW_PRIVATE_TARGETS`` (``allow_private``) turns the policy off for self-hosters who
monitor their own network.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from core.checks import resolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Beyond what ``is_global`` already excludes, and stated here so the policy does not shift with the
# Python version (3.11's ``is_global`` says yes to site-local, multicast and the NAT64 local-use prefix).
_ALSO_FORBIDDEN = tuple(
    ipaddress.ip_network(net)
    for net in (
        "100.64.0.0/10",  # CGNAT: carrier internals and Alibaba Cloud's metadata at 100.100.100.200
        "169.254.0.0/16",  # link-local, incl. the AWS/GCP/Azure metadata service at 169.254.169.254
        "fe80::/10",  # link-local
        "fc00::/7",  # unique local, incl. AWS's IPv6 metadata service at fd00:ec2::254
        "fec0::/10",  # deprecated site-local, still routed by some stacks
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): embeds IPv4 at varying offsets
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# Special-use names that only ever name the server itself, a private network or a cloud's metadata service.
_FORBIDDEN_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback", "metadata", "instance-data"})
_FORBIDDEN_SUFFIXES = (".localhost", ".internal", ".local", ".home.arpa", ".localdomain")
# Numbers-and-dots forms that inet_aton reads as IPv4 though ipaddress does not: 127.1, 0x7f.1, 2130706433.
_LEGACY_IPV4 = re.compile(r"[0-9a-fx.]+")


class TargetNotAllowed(Exception):  # noqa: N818 (a verdict, not a malfunction)
    """The target is, or resolves to, an address monitors may not reach; the message says which."""


def is_forbidden(ip: IPAddress) -> bool:
    """Whether a check may not connect to ``ip``: anything that is not plainly a public unicast address.

    IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged as that IPv4, since
    that is where a dual-stack host or a translator delivers the packets.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_forbidden(embedded)
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in net for net in _ALSO_FORBIDDEN)
    )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if int(ip) >> 32 == 0 or ip in _NAT64:  # IPv4-compatible ::a.b.c.d (incl. :: and ::1), NAT64
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def parse_ip(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is a literal in any form ipaddress reads (``[::1]`` too), else None."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def static_target_problem(host: str) -> str | None:
    """Why a monitor may not target ``host``, judged without DNS when it is created or updated; None if fine.

    Catches forbidden IP literals (including the legacy forms ``127.1`` and ``0x7f000001``) and names that
    can only be local. Names that resolve to private addresses are caught by :func:`resolve` at check time.
    """
    ip = parse_ip(host) or _legacy_ipv4(host)
    if ip is not None:
        return f"{host} is not a public address" if is_forbidden(ip) else None
    name = host.lower().rstrip(".")
    if name in _FORBIDDEN_NAMES or name.endswith(_FORBIDDEN_SUFFIXES):
        return f"{host} names a local or internal host, not a public one"
    return None


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    # glibc's inet_aton ignores anything after a space, so only hand it strings made of its own alphabet.
    if not _LEGACY_IPV4.fullmatch(host.lower()):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


async def resolve(host: str, *, allow_private: bool, timeout: float) -> list[str]:  # noqa: ASYNC109
    """The addresses to connect to for ``host``, in the resolver's order, without duplicates.

    IP literals (the legacy forms ``127.1`` and ``0x7f000001`` too, as getaddrinfo reads them) are returned
    as they are; names go through :func:`core.checks.resolver.lookup`, never the event loop's resolver
    threads. Raises :class:`TargetNotAllowed` when ``allow_private`` is False and any address is forbidden
    (one bad address is enough: a rebinding attacker controls which one a client picks), ``socket.gaierror``
    (its ``strerror`` naming the host) when the name does not resolve and ``TimeoutError`` after ``timeout``
    seconds.
    """
    literal = parse_ip(host) or _legacy_ipv4(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = await resolver.lookup(host, timeout=timeout)
        except socket.gaierror as exc:
            raise socket.gaierror(exc.errno, f"could not resolve {host}: {exc.strerror}") from None
    if not allow_private and any(is_forbidden(ipaddress.ip_address(address)) for address in addresses):
        # Never the address a name resolved to: it would map the server's private network for the asker.
        shown = "is not a public address" if literal is not None else "resolves to a private or reserved address"
        raise TargetNotAllowed(f"{host} {shown}: not allowed (monitors may only reach public hosts)")
    return addresses
