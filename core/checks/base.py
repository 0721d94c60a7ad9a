"""What a checker is given and what it answers: the one interface between the scheduler and the check types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One monitor's check settings, decrypted, as the scheduler hands them to a checker.

    ``type`` is one of ``http https keyword tcp dns tls ping`` (heartbeats are pushed, never checked).
    """

    type: str
    timeout_ms: int
    url: str | None = None  # http/https/keyword/tls
    host: str | None = None  # tcp/ping: the target; dns: the name to resolve
    port: int | None = None  # tcp: required; tls: overrides the URL's port
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    # None: any 2xx/3xx. Otherwise the accepted codes; a class "2xx" is expanded to 200..299 by the caller.
    expected_status: frozenset[int] | None = None
    max_redirects: int = 10  # 0: a redirect is the answer (judged by expected_status)
    ignore_tls_errors: bool = False
    keyword: str | None = None
    keyword_inverted: bool = False
    dns_record_type: str = "A"  # A AAAA CNAME MX NS TXT SOA CAA SRV PTR
    dns_resolver: str | None = None  # "ip" or "ip:port"; None: the system's resolver
    # dns: one of the answers must equal this (case-insensitive, trailing dot ignored)
    expected_value: str | None = None
    tls_expiry_days: int = 14
    allow_private: bool = False  # OBSERVE_ALLOW_PRIVATE_TARGETS


@dataclass(slots=True)
class CheckResult:
    """What one check found. ``ok`` decides up/down; ``error`` says why not in one line for humans."""

    ok: bool
    response_ms: float | None = None  # whole check, start to finish
    status_code: int | None = None  # http types
    error: str | None = None
    # A stable short reason when not ok: timeout, dns, refused, connect, tls, status, keyword, dns_mismatch,
    # cert_expiring, target_not_allowed, too_many_redirects, ping_not_permitted, unreachable, protocol.
    reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # ms: dns, connect, tls, first_byte
    cert_expires_at: datetime | None = None  # tls, https (leaf certificate notAfter)
    resolved_ip: str | None = None  # the address actually connected to
