"""The dns check: does a name resolve, and to what we expect, asked of the system's or a chosen resolver."""

from __future__ import annotations

import asyncio
import ipaddress
from time import perf_counter

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename
from dns.rdata import Rdata
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from core.checks import resolver, targets
from core.checks.base import CheckResult, CheckSpec
from core.checks.tcp import add_timing

_SHOWN_ANSWERS = 10
# The query's own timeout names the resolver; leaving it this much before the check's timeout lets it fire first.
_TIMEOUT_MARGIN = 0.05
_SERVER_RESOLVER = "the server's resolver"


async def check(spec: CheckSpec, result: CheckResult) -> None:
    """Up when the query answers and, if ``expected_value`` is set, one answer equals it once normalised.

    Asked of the server's own resolver while private targets are forbidden, it refuses what would show that
    resolver's view of the private network: local names, reverse lookups of private addresses, and answers
    holding a private address (whether or not one matches, so a guess cannot be confirmed either).
    """
    if not spec.host:
        raise ValueError("a dns check needs a host (the name to resolve)")
    record_type = spec.dns_record_type.upper()
    ip = targets.parse_ip(spec.host)
    guarded = spec.dns_resolver is None and not spec.allow_private
    if guarded and (
        targets.static_target_problem(spec.host) is not None
        or (record_type == "PTR" and ip is not None and targets.is_forbidden(ip))
    ):
        raise targets.TargetNotAllowed(
            f"{spec.host} is local or private: not allowed (monitors may only reach public hosts)"
        )
    name = dns.reversename.from_address(str(ip)) if record_type == "PTR" and ip is not None else spec.host
    server = spec.dns_resolver or _SERVER_RESOLVER
    asked = _resolver(spec.dns_resolver, spec.allow_private) if spec.dns_resolver else None
    lifetime = max(spec.timeout_ms / 1000 - _TIMEOUT_MARGIN, _TIMEOUT_MARGIN)
    started = perf_counter()
    try:
        # dnspython checks its lifetime only between attempts, after a backoff sleep: past the check's timeout.
        async with asyncio.timeout(lifetime):
            answer = await (asked or resolver.server_resolver()).resolve(
                name, record_type, search=False, lifetime=lifetime
            )
    except dns.resolver.NXDOMAIN:
        result.reason, result.error = "dns", f"{spec.host} does not exist (NXDOMAIN)"
        return
    except dns.resolver.NoAnswer:
        result.reason, result.error = "dns", f"{spec.host} has no {record_type} records"
        return
    except (dns.resolver.LifetimeTimeout, TimeoutError):
        result.reason, result.error = "dns", f"no answer from {server} within {spec.timeout_ms} ms"
        return
    except dns.resolver.NoNameservers:
        result.reason, result.error = "dns", f"{server} could not answer for {spec.host} (SERVFAIL or refused)"
        return
    except dns.exception.DNSException as exc:
        # dnspython's own words name the servers asked; the server's own resolver stays unnamed.
        result.reason, result.error = (
            "dns",
            str(exc) if spec.dns_resolver else f"{server} could not answer ({type(exc).__name__})",
        )
        return
    finally:
        add_timing(result, "dns", started)
    if guarded and any(_forbidden(rdata) for rdata in answer):
        raise targets.TargetNotAllowed(
            f"{spec.host} resolves to a private or reserved address: not allowed (monitors may only reach public hosts)"
        )
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
    ip, port = resolver.parse_server(address)
    if not allow_private and targets.is_forbidden(ipaddress.ip_address(ip)):
        raise targets.TargetNotAllowed(f"resolver {address.strip()} is not a public address: not allowed")
    return resolver.resolver_at([(ip, port)])


def _forbidden(rdata: Rdata) -> bool:
    """Whether an answer is an address (A, AAAA) that monitors may not reach."""
    return isinstance(rdata, A | AAAA) and targets.is_forbidden(ipaddress.ip_address(rdata.address))


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
