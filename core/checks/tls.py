"""The tls check (is the certificate valid, and for how long), and the TLS settings every checker shares.

SSL contexts are built once per flavour and shared: loading a CA bundle costs milliseconds, far more than
the handshake's own CPU, and a context is safe to use from many connections at once.
"""

from __future__ import annotations

import functools
import math
import os
import ssl
from datetime import UTC, datetime
from time import perf_counter
from urllib.parse import urlsplit

import certifi
from cryptography import x509

from core.checks.base import CheckResult, CheckSpec
from core.checks.tcp import add_timing, open_stream

# A PEM bundle trusted in addition to the public roots: for monitors of sites behind a company CA.
EXTRA_CA_ENV = "OBSERVE_EXTRA_CA_FILE"


@functools.cache
def client_context(verify: bool) -> ssl.SSLContext:
    """The shared client context: certifi's roots plus ``OBSERVE_EXTRA_CA_FILE`` (read on first use), or none."""
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context(cafile=certifi.where())
    if extra := os.environ.get(EXTRA_CA_ENV):
        context.load_verify_locations(cafile=extra)
    return context


def cert_not_after(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> datetime | None:
    """The peer's leaf certificate expiry, read from the DER form so it works without verification too."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return x509.load_der_x509_certificate(der).not_valid_after_utc if der else None


def describe_verify_error(exc: ssl.SSLCertVerificationError) -> str:
    return f"certificate verify failed: {exc.verify_message or exc.reason}"


async def check(spec: CheckSpec, result: CheckResult) -> None:
    """Up when the handshake verifies (unless ``ignore_tls_errors``) and the leaf certificate is valid for at
    least ``tls_expiry_days`` more days."""
    host, port = _target(spec)
    _, writer = await open_stream(host, port, spec, result)
    try:
        started = perf_counter()
        await writer.start_tls(client_context(not spec.ignore_tls_errors), server_hostname=host)
        add_timing(result, "tls", started)
        expires = cert_not_after(writer.get_extra_info("ssl_object"))
    finally:
        writer.close()
    if expires is None:
        result.reason, result.error = "tls", "the server sent no certificate"
        return
    result.cert_expires_at = expires
    days = (expires - datetime.now(UTC)).total_seconds() / 86400
    if days >= spec.tls_expiry_days:
        result.ok = True
        return
    whole = math.ceil(abs(days))
    span = f"{whole} day{'' if whole == 1 else 's'}"
    date = f"{expires:%Y-%m-%d %H:%M} UTC"
    result.reason = "cert_expiring"
    result.error = (
        f"certificate expires in {span} ({date})" if days >= 0 else f"certificate expired {span} ago ({date})"
    )


def _target(spec: CheckSpec) -> tuple[str, int]:
    if spec.url:
        parts = urlsplit(spec.url)
        host, port = parts.hostname, parts.port
    else:
        host, port = spec.host, None
    if not host:
        raise ValueError("a tls check needs a URL or a host")
    return host, spec.port or port or 443
