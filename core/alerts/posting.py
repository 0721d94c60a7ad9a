"""The one POST every HTTP channel makes, and how its answer is classified.

The URL a user gives is a server-side request forgery risk just like a monitor's, so the connection is
made the way checks make theirs: the host resolves through :func:`core.checks.targets.resolve` when the
attempt is made (not when the URL was saved), and only an address it returned is connected to, TLS and
``Host`` still naming the host. ``allow_private`` is OBSERVE_ALLOW_PRIVATE_TARGETS.

Errors are worded here, never copied from an exception: alert URLs carry their secret in the path
(Slack, Discord, a Telegram bot token), and an exception's text may quote the URL.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import typing
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpcore

from core.alerts.base import AlertMessage, ChannelSettings, DeliveryOutcome
from core.checks import targets
from core.checks.tls import client_context

USER_AGENT = "observe-alerts/1 (+uptime monitor)"
_RETRY_STATUSES = frozenset({408, 429})


class _Backend(httpcore.AsyncNetworkBackend):
    """AnyIO's TCP connections, made only to addresses the target policy allows."""

    def __init__(self, *, allow_private: bool, timeout: float) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private
        self._timeout = timeout

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await targets.resolve(host, allow_private=self._allow_private, timeout=self._timeout)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, socket_options=socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None  # resolve() returns at least one address
        raise error

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def post(
    url: str,
    body: bytes,
    *,
    timeout: float,  # noqa: ASYNC109 (the whole attempt's bound)
    allow_private: bool,
    headers: Iterable[tuple[str, str]] = (),
) -> DeliveryOutcome:
    """POSTs ``body`` (JSON) to ``url`` once, within ``timeout`` seconds; redirects are not followed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return DeliveryOutcome("failed", error="the alert URL is not an http(s) URL")
    host = parts.hostname if parts.hostname.isascii() else parts.hostname.encode("idna").decode()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    authority = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request_headers = [
        ("Host", authority),
        ("User-Agent", USER_AGENT),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *headers,
    ]
    pool = httpcore.AsyncConnectionPool(
        ssl_context=client_context(True) if parts.scheme == "https" else None,
        network_backend=_Backend(allow_private=allow_private, timeout=timeout),
        max_connections=1,
        retries=0,
    )
    try:
        async with asyncio.timeout(timeout), pool:
            request_url = httpcore.URL(scheme=parts.scheme, host=host, port=port, target=target)
            # The body is never read: the status and Retry-After are all a delivery needs.
            async with pool.stream("POST", request_url, headers=request_headers, content=body) as response:
                status = response.status
                retry_after = _header(response.headers, b"retry-after")
    except TimeoutError:
        return DeliveryOutcome("retry", error=f"no answer within {timeout:g} s")
    except targets.TargetNotAllowed:
        return DeliveryOutcome(
            "failed",
            error="the alert URL's host is not a public address: not allowed (OBSERVE_ALLOW_PRIVATE_TARGETS)",
        )
    except socket.gaierror:
        return DeliveryOutcome("retry", error="the alert URL's host did not resolve")
    except httpcore.ConnectError:
        return DeliveryOutcome("retry", error="could not connect to the alert URL's host")
    except (httpcore.ReadError, httpcore.WriteError, httpcore.RemoteProtocolError):
        return DeliveryOutcome("retry", error="the connection failed before an answer came")
    except (httpcore.ProtocolError, httpcore.NetworkError, OSError):
        return DeliveryOutcome("retry", error="the receiver did not answer in HTTP")
    return classify(status, retry_after)


def classify(status: int, retry_after: bytes | None = None) -> DeliveryOutcome:
    """2xx delivered; 408, 429 and 5xx retry (after ``Retry-After`` when given); anything else failed."""
    if 200 <= status < 300:
        return DeliveryOutcome("delivered", http_status=status)
    if status in _RETRY_STATUSES or status >= 500:
        return DeliveryOutcome(
            "retry", http_status=status, error=f"HTTP {status}", retry_after_sec=parse_retry_after(retry_after)
        )
    if 300 <= status < 400:
        return DeliveryOutcome("failed", http_status=status, error=f"HTTP {status}: redirects are not followed")
    return DeliveryOutcome("failed", http_status=status, error=f"HTTP {status}")


def parse_retry_after(value: bytes | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` of delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class HookChannel:
    """A channel whose target is one webhook URL (a secret) that takes one JSON
    body; a subclass names itself and says what that body is."""

    name = ""

    def __init__(self, settings: ChannelSettings) -> None:
        self.settings = settings

    def payload(self, message: AlertMessage) -> dict[str, object]:
        raise TypeError(f"{type(self).__name__} must say what it posts")

    async def send(self, message: AlertMessage, target: str) -> DeliveryOutcome:
        return await post(
            target,
            json.dumps(self.payload(message)).encode(),
            timeout=self.settings.timeout_sec,
            allow_private=self.settings.allow_private,
        )
