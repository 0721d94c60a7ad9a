"""The dns check: does a name resolve, and to what we expect, asked of the system's or a chosen resolver."""

from __future__ import annotations

import functools
from time import perf_counter

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename
from dns.rdata import Rdata
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.TXT import TXT

from core.checks import targets
from core.checks.base import CheckResult, CheckSpec
from core.checks.tcp import add_timing

_SHOWN_ANSWERS = 10
# The resolver's own timeout names the resolver; leaving it this much before the check's timeout lets it fire first.
_TIMEOUT_MARGIN = 0.05


@functools.cache
def _system_resolver() -> dns.asyncresolver.Resolver:
    """Built once: reading /etc/resolv.conf is the slowest part of making a resolver."""
    return dns.asyncresolver.Resolver()


async def check(spec: CheckSpec, result: CheckResult) -> None:
    """Up when the query answers and, if ``expected_value`` is set, one answer equals it once normalised."""
    if not spec.host:
        raise ValueError("a dns check needs a host (the name to resolve)")
    resolver = _resolver(spec.dns_resolver, spec.allow_private) if spec.dns_resolver else _system_resolver()
    record_type = spec.dns_record_type.upper()
    ip = targets.parse_ip(spec.host)
    name = dns.reversename.from_address(str(ip)) if record_type == "PTR" and ip is not None else spec.host
    started = perf_counter()
    try:
        answer = await resolver.resolve(
            name, record_type, lifetime=max(spec.timeout_ms / 1000 - _TIMEOUT_MARGIN, _TIMEOUT_MARGIN)
        )
    except dns.resolver.NXDOMAIN:
        result.reason, result.error = "dns", f"{spec.host} does not exist (NXDOMAIN)"
        return
    except dns.resolver.NoAnswer:
        result.reason, result.error = "dns", f"{spec.host} has no {record_type} records"
        return
    except dns.resolver.LifetimeTimeout:
        server = spec.dns_resolver or "the system resolver"
        result.reason, result.error = "dns", f"no answer from {server} within {spec.timeout_ms} ms"
        return
    except dns.exception.DNSException as exc:
        result.reason, result.error = "dns", str(exc)
        return
    finally:
        add_timing(result, "dns", started)
    if spec.expected_value is None:
        result.ok = True
        return
    expected = _normalise(spec.expected_value)
    shown: list[str] = []
    for rdata in answer:
        forms = _forms(rdata)
        if expected in {_normalise(form) for form in forms}:
            result.ok = True
            return
        shown.append(forms[0])
    got = ", ".join(shown[:_SHOWN_ANSWERS]) + (", …" if len(shown) > _SHOWN_ANSWERS else "")
    result.reason, result.error = "dns_mismatch", f"expected {spec.expected_value!r}, got {got}"


def _resolver(address: str, allow_private: bool) -> dns.asyncresolver.Resolver:
    """A resolver at ``address`` ("ip", "ip:port" or "[ipv6]:port"), held to the target policy."""
    text = address.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    ip = targets.parse_ip(host)
    if ip is None:
        raise ValueError(f"the DNS resolver must be an IP address, not {text!r}")
    if not allow_private and targets.is_forbidden(ip):
        raise targets.TargetNotAllowed(f"resolver {text} is not a public address")
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [str(ip)]
    resolver.port = port
    return resolver


def _forms(rdata: Rdata) -> list[str]:
    """The ways a user may write this answer, the one to show first."""
    if isinstance(rdata, MX):
        exchange = rdata.exchange.to_text()
        return [f"{rdata.preference} {exchange}", exchange]
    if isinstance(rdata, TXT):
        return [b"".join(rdata.strings).decode(errors="replace"), rdata.to_text()]
    return [rdata.to_text()]


def _normalise(value: str) -> str:
    value = value.strip().rstrip(".").lower()
    ip = targets.parse_ip(value)
    return str(ip) if ip is not None else value
