"""Which address a call comes from: the peer, or, when the peer is a proxy
the operator trusts (``OBSERVE_TRUSTED_PROXIES``), the client it names in
``X-Forwarded-For`` or ``Forwarded``. Both transports ask here, so the
per-IP rate limits and the audit log see one address for one client.

Anyone can send those headers, so they are read only from a trusted peer,
and from the right: each proxy appends the address it saw, and the first
hop (walking leftwards) that is not itself a trusted proxy is the client.
Entries to its left were written by the client and are never believed.
``X-Forwarded-For`` wins over ``Forwarded`` when both are present: the
proxy in front must set (or strip) the one it uses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(setting: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 192.168.1.7 ::1"`` → networks; a bare address is a /32
    (/128). Raises ValueError naming the entry that is neither."""
    networks: list[Network] = []
    for entry in setting.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"OBSERVE_TRUSTED_PROXIES: {entry!r} is not an address or CIDR") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    """An address from a header entry or a peer: ``1.2.3.4``, ``1.2.3.4:80``,
    ``[::1]:80``, ``::1``, ``"[::1]"``; IPv4-mapped IPv6 as IPv4. None for
    anything else (``unknown``, ``_hidden``, garbage)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_for(values: Iterable[str]) -> list[str]:
    """The ``for=`` of each element of RFC 7239 ``Forwarded`` headers, in
    order; an element without one counts as an unknown hop ("")."""
    hops: list[str] = []
    for value in values:
        for element in value.split(","):
            found = ""
            for pair in element.split(";"):
                name, _, param = pair.partition("=")
                if name.strip().lower() == "for":
                    found = param
            hops.append(found)
    return hops


class TrustedProxies:
    """The networks whose forwarded headers are believed; empty by default."""

    def __init__(self, networks: Sequence[Network] = ()) -> None:
        self.networks = tuple(networks)

    @classmethod
    def from_setting(cls, setting: str | None) -> TrustedProxies:
        return cls(parse_networks(setting or ""))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str, x_forwarded_for: Sequence[str] = (), forwarded: Sequence[str] = ()) -> str:
        """The client's address for a call from ``peer`` carrying these
        header values (each header line one item). ``peer`` itself unless it
        is trusted and a header names someone else."""
        nearest = _address(peer)
        if nearest is None or not self.trusts(nearest) or not (x_forwarded_for or forwarded):
            return peer
        hops = ",".join(x_forwarded_for).split(",") if x_forwarded_for else _forwarded_for(forwarded)
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                # A hop we cannot read: the proxy that wrote it is the last one we know.
                break
            nearest = address
            if not self.trusts(address):
                break
        return str(nearest)

    def is_trusted_peer(self, peer: str) -> bool:
        address = _address(peer)
        return address is not None and self.trusts(address)
