"""Checkers: each monitor type's probe, run by :func:`run_check`.

Every checker is ``async def check(spec, result) -> None``: it fills ``result`` as it goes (timings, the
address connected to, the certificate) and sets ``ok``, or ``reason`` and ``error`` for a failure it judged
itself (a status, a keyword, a DNS answer, an expiry). Network failures are left to raise; :func:`run_check`
turns them into reasons here, once, so every check type words them alike and keeps the timings gathered
before the failure.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import Awaitable, Callable
from time import perf_counter

import httpcore

from core.checks import dns, http, ping, targets, tcp, tls
from core.checks.base import CheckResult, CheckSpec

Checker = Callable[[CheckSpec, CheckResult], Awaitable[None]]

CHECKERS: dict[str, Checker] = {
    "http": http.check,
    "https": http.check,
    "keyword": http.check,
    "tcp": tcp.check,
    "dns": dns.check,
    "tls": tls.check,
    "ping": ping.check,
}
_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})

__all__ = ["CHECKERS", "CheckResult", "CheckSpec", "run_check"]


async def run_check(spec: CheckSpec) -> CheckResult:
    """Runs one check within ``spec.timeout_ms`` and says what it found; never raises (but can be cancelled).

    ``response_ms`` is the wall time of the whole check, except for a ping answered: the round trip.
    """
    result = CheckResult(ok=False)
    started = perf_counter()
    deadline = asyncio.timeout(spec.timeout_ms / 1000)
    try:
        checker = CHECKERS.get(spec.type)
        if checker is None:
            raise ValueError(f"no checker for monitors of type {spec.type!r}")
        async with deadline:
            await checker(spec, result)
    except TimeoutError as exc:
        result.ok, result.reason = False, "timeout"
        result.error = f"timed out after {spec.timeout_ms} ms" if deadline.expired() else str(exc) or "timed out"
    except Exception as exc:
        result.ok = False
        result.reason, result.error = _describe(exc)
    if result.response_ms is None:
        result.response_ms = (perf_counter() - started) * 1000
    return result


def _describe(exc: Exception) -> tuple[str, str]:
    """The reason and the one-line message for a failure a checker raised."""
    match exc:
        case targets.TargetNotAllowed():
            return "target_not_allowed", str(exc)
        case socket.gaierror():
            return "dns", exc.strerror or str(exc)
        case ssl.SSLCertVerificationError():
            return "tls", tls.describe_verify_error(exc)
        case ssl.SSLError():
            return "tls", f"TLS handshake failed: {exc.reason or exc}"
        case ConnectionRefusedError():
            return "refused", "connection refused"
        case OSError() if exc.errno in _UNREACHABLE:
            return "unreachable", exc.strerror or str(exc)
        case OSError():
            return "connect", exc.strerror or str(exc)
        case httpcore.ProtocolError():
            return "protocol", f"not a valid HTTP response: {exc}"
        case _:
            return "protocol", str(exc) or type(exc).__name__
