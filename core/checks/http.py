"""The http, https and keyword checks: one request per hop on a fresh connection, redirects followed by hand.

httpcore speaks HTTP/1.1; the connection under it comes from :class:`_Backend`, which resolves through the
safe-target policy, connects to the permitted address (SNI and Host stay the name) and times each phase.
Every hop, redirects included, connects through it, so a redirect cannot lead a check into a private network.

There is no pool: a check measures a fresh connection, so keep-alive would only hide the connect and TLS
time, and one ``AsyncHTTPConnection`` per hop is the least machinery that still speaks HTTP properly. The
stream is asyncio's own rather than httpcore's AnyIO one. Measured (bench/checker_throughput.py, uvloop),
a pool per check costs 1.7x the CPU and the AnyIO stream 1.3x.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import typing
import zlib
from time import perf_counter
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

import httpcore

from core.checks.base import CheckResult, CheckSpec
from core.checks.tcp import add_timing, open_stream
from core.checks.tls import cert_not_after, client_context

BODY_LIMIT = 1024 * 1024  # keyword checks search this much of the (decoded) body
USER_AGENT = "observe-checker/1 (+uptime monitor)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_EXTRA_INFO = {"ssl_object": "ssl_object", "socket": "socket", "client_addr": "sockname", "server_addr": "peername"}


class _Stream(httpcore.AsyncNetworkStream):
    """An asyncio stream that records ``tls`` and ``first_byte`` (first request byte sent → first byte back).

    httpcore's ``timeout`` arguments are ignored: :func:`core.checks.run_check` bounds the whole check.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, result: CheckResult) -> None:
        self._reader = reader
        self._writer = writer
        self._result = result
        self._sent_at: float | None = None
        self._answered = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        data = await self._reader.read(max_bytes)
        if not self._answered and self._sent_at is not None:
            self._answered = True
            add_timing(self._result, "first_byte", self._sent_at)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if self._sent_at is None:
            self._sent_at = perf_counter()
        self._writer.write(buffer)
        await self._writer.drain()

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        started = perf_counter()
        await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        add_timing(self._result, "tls", started)
        self._result.cert_expires_at = cert_not_after(self._writer.get_extra_info("ssl_object"))
        return self

    def get_extra_info(self, info: str) -> typing.Any:
        name = _EXTRA_INFO.get(info)
        return self._writer.get_extra_info(name) if name else None


class _Backend(httpcore.AsyncNetworkBackend):
    """Connects the way every checker does (:func:`open_stream`), for one check and all its hops."""

    def __init__(self, spec: CheckSpec, result: CheckResult) -> None:
        self._spec = spec
        self._result = result

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        reader, writer = await open_stream(host, port, self._spec, self._result)
        return _Stream(reader, writer, self._result)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def check(spec: CheckSpec, result: CheckResult) -> None:
    """Up when the final response's status is accepted and, for keyword checks, the keyword is (not) there."""
    if not spec.url:
        raise ValueError(f"an {spec.type} check needs a URL")
    if spec.type == "keyword" and not spec.keyword:
        raise ValueError("a keyword check needs a keyword")
    backend = _Backend(spec, result)
    url, method = spec.url, spec.method.upper()
    body = spec.body.encode() if spec.body else b""
    headers = [(name.encode(), value.encode()) for name, value in spec.headers]
    origin = _origin(url)
    for hop in range(spec.max_redirects + 1):
        response, text = await _fetch(backend, spec, url, method, headers, body, read_body=spec.type == "keyword")
        location = response.headers.get(b"location") if response.status in _REDIRECTS else None
        if location is None or spec.max_redirects == 0:
            break
        if hop == spec.max_redirects:
            result.reason = "too_many_redirects"
            result.error = f"more than {spec.max_redirects} redirects (last to {location.decode(errors='replace')})"
            result.status_code = response.status
            return
        url = urljoin(url, location.decode("latin-1"))
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method, body = "GET", b""  # what browsers do, and so what sites expect
        if _origin(url) != origin:
            # The monitor's headers are secrets meant for the origin the user named: none of them goes to
            # another scheme, host or port, nor comes back if a later hop returns there.
            headers = []
    result.status_code = response.status
    if not _status_accepted(response.status, spec.expected_status):
        result.reason = "status"
        result.error = f"HTTP {response.status}, expected {_describe_expected(spec.expected_status)}"
        return
    if spec.keyword and spec.type == "keyword":
        found = spec.keyword in text
        if found == spec.keyword_inverted:
            result.reason = "keyword"
            result.error = (
                f"keyword {spec.keyword!r} found in the response"
                if found
                else f"keyword {spec.keyword!r} not found in the response"
            )
            return
    result.ok = True


class _Response(typing.NamedTuple):
    status: int
    headers: dict[bytes, bytes]


async def _fetch(
    backend: _Backend,
    spec: CheckSpec,
    url: str,
    method: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    read_body: bool,
) -> tuple[_Response, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname if parts.hostname.isascii() else parts.hostname.encode("idna").decode()
    authority = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    names = {name.lower() for name, _ in headers}
    extra = [(b"Host", authority.encode()), (b"User-Agent", USER_AGENT.encode()), (b"Accept", b"*/*")]
    if parts.username and b"authorization" not in names:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        extra.append((b"Authorization", b"Basic " + base64.b64encode(credentials)))
    if body:
        extra.append((b"Content-Length", str(len(body)).encode()))
    request = httpcore.Request(
        method,
        httpcore.URL(scheme=parts.scheme, host=host, port=port, target=_target(parts)),
        headers=[(name, value) for name, value in extra if name.lower() not in names] + headers,
        content=body,
    )
    connection = httpcore.AsyncHTTPConnection(
        request.url.origin,
        ssl_context=client_context(not spec.ignore_tls_errors) if parts.scheme == "https" else None,
        network_backend=backend,
    )
    try:
        response = await connection.handle_async_request(request)
        response_headers = {name.lower(): value for name, value in response.headers}
        text = await _read_text(response, response_headers) if read_body else ""
        await response.aclose()
    finally:
        await connection.aclose()
    return _Response(response.status, response_headers), text


def _origin(url: str) -> tuple[str, str | None, int]:
    """Scheme, host and port, the port filled in from the scheme: what a redirect must keep to stay put."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.hostname, parts.port or (443 if parts.scheme.lower() == "https" else 80)


def _target(parts: SplitResult) -> bytes:
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return quote(target, safe="!#$%&'()*+,/:;=?@[]~").encode()  # only non-ASCII and spaces need escaping


async def _read_text(response: httpcore.Response, headers: dict[bytes, bytes]) -> str:
    """Up to :data:`BODY_LIMIT` of the body, decompressed (gzip/deflate) and decoded leniently."""
    encoding = headers.get(b"content-encoding", b"").strip().lower()
    # We send no Accept-Encoding, so only a user's own header brings a compressed body; wbits 47 reads
    # both gzip and zlib framing.
    inflater = zlib.decompressobj(47) if encoding in (b"gzip", b"x-gzip", b"deflate") else None
    chunks: list[bytes] = []
    size = 0
    stream = typing.cast("typing.AsyncGenerator[bytes, None]", response.aiter_stream())
    try:
        async for chunk in stream:
            data = inflater.decompress(chunk, BODY_LIMIT - size) if inflater is not None else chunk
            chunks.append(data)
            size += len(data)
            if size >= BODY_LIMIT:
                break
    finally:
        await stream.aclose()
    charset = _charset(headers.get(b"content-type", b""))
    raw = b"".join(chunks)[:BODY_LIMIT]
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def _charset(content_type: bytes) -> str:
    for param in content_type.decode("latin-1").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or "utf-8"
    return "utf-8"


def _status_accepted(status: int, expected: frozenset[int] | None) -> bool:
    return 200 <= status < 400 if expected is None else status in expected


def _describe_expected(expected: frozenset[int] | None) -> str:
    if expected is None:
        return "2xx or 3xx"
    classes = sorted({code // 100 for code in expected})
    if all(set(range(c * 100, c * 100 + 100)) <= expected for c in classes) and len(expected) == 100 * len(classes):
        return " or ".join(f"{c}xx" for c in classes)
    return ", ".join(str(code) for code in sorted(expected))
