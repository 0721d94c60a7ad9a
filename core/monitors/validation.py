"""The monitor body's rules (CONTRACT.md, "Monitor body"), applied to the
whole monitor after a create or a patch so cross-field rules (timeoutMs below
the interval, a url fitting the type) hold for the result, not just the
request. Settings travel as a dict in API field names."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from cronsim import CronSim, CronSimError
from google.protobuf import json_format
from observe.v1 import monitors_pb2

from core import clock
from core.checks import targets
from core.errors import ErrorCode, FieldViolation, ObserveError, Violations
from core.rpc.jsonmap import enum_json_names

TYPES = enum_json_names(monitors_pb2.MonitorType.DESCRIPTOR)
TYPE_NUMBERS = {name: number for number, name in TYPES.items()}
REGIONS = enum_json_names(monitors_pb2.Region.DESCRIPTOR)
REGION_NUMBERS = {name: number for number, name in REGIONS.items()}

INTERVALS = (30, 60, 300, 900, 1800, 3600)
HTTP_TYPES = frozenset({"http", "https", "keyword"})
URL_TYPES = HTTP_TYPES | {"tls"}
HOST_TYPES = frozenset({"tcp", "ping", "dns"})
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DNS_RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "TXT", "SOA", "CAA", "SRV", "PTR")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
TAG_RE = re.compile(r"^[a-z0-9\-_:.]{1,50}$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
HOST_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_\-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_\-]{0,61}[A-Za-z0-9_])?)*\.?$"
)
TELEGRAM_TOKEN_RE = re.compile(r"^\d{3,20}:[A-Za-z0-9_-]{30,60}$")
TELEGRAM_CHAT_RE = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$")

SECRET_FIELDS = (
    "headers",
    "alertSlackUrl",
    "alertWebhookUrl",
    "alertDiscordUrl",
    "alertTelegramBotToken",
    "alertTelegramChatId",
)
# The fields each type may carry beyond the common ones; a request setting
# another type's field is refused, a type change drops the old type's.
TYPE_FIELDS: dict[str, frozenset[str]] = {
    "http": frozenset({"url", "method", "headers", "body", "expectedStatus", "maxRedirects"}),
    "https": frozenset({"url", "method", "headers", "body", "expectedStatus", "maxRedirects", "ignoreTlsErrors"}),
    "keyword": frozenset(
        {
            "url",
            "method",
            "headers",
            "body",
            "expectedStatus",
            "maxRedirects",
            "ignoreTlsErrors",
            "keyword",
            "keywordInverted",
        }
    ),
    "tcp": frozenset({"host", "port"}),
    "dns": frozenset({"host", "dnsRecordType", "dnsResolver", "expectedValue"}),
    "tls": frozenset({"url", "port", "tlsExpiryDays", "ignoreTlsErrors"}),
    "ping": frozenset({"host"}),
    "heartbeat": frozenset({"graceSec", "cron", "timezone"}),
}
COMMON_FIELDS = frozenset(
    {
        "name", "type", "intervalSec", "timeoutMs", "failureThreshold", "recoveryThreshold", "tags", "regions",
        "paused", "publicBadge", "alertEmail", "alertSlackUrl", "alertWebhookUrl", "alertDiscordUrl",
        "alertTelegramBotToken", "alertTelegramChatId",
    }
)  # fmt: skip
TYPED_FIELDS = frozenset().union(*TYPE_FIELDS.values())
DEFAULTS: dict[str, Any] = {
    "intervalSec": 60,
    "timeoutMs": 10000,
    "failureThreshold": 2,
    "recoveryThreshold": 1,
    "tags": [],
    "regions": ["local"],
    "paused": False,
    "publicBadge": False,
}
TYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "http": {"method": "GET", "maxRedirects": 10},
    "https": {"method": "GET", "maxRedirects": 10, "ignoreTlsErrors": False},
    "keyword": {"method": "GET", "maxRedirects": 10, "ignoreTlsErrors": False, "keywordInverted": False},
    "dns": {"dnsRecordType": "A"},
    "tls": {"tlsExpiryDays": 14, "ignoreTlsErrors": False},
    "heartbeat": {"graceSec": 60, "timezone": "UTC"},
}

FIELDS = {fd.json_name: fd for fd in monitors_pb2.MonitorInput.DESCRIPTOR.fields}
BY_PROTO_NAME = {fd.name: fd.json_name for fd in monitors_pb2.MonitorInput.DESCRIPTOR.fields}


def present_fields(msg: monitors_pb2.MonitorInput, mask: Iterable[str] | None = None) -> dict[str, Any]:
    """The fields a create or patch gives, in API names: those named by ``mask``
    (proto or JSON names; an unset one is None, i.e. cleared), else those set."""
    out: dict[str, Any] = {}
    if mask is None:
        names = [fd.json_name for fd in msg.DESCRIPTOR.fields if _is_set(msg, fd)]
    else:
        names = [BY_PROTO_NAME.get(p, p) for p in mask]
    for name in names:
        fd = FIELDS[name]
        out[name] = _value(msg, fd) if _is_set(msg, fd) else None
    return out


def unknown_mask_paths(mask: Iterable[str]) -> list[str]:
    return [p for p in mask if p not in BY_PROTO_NAME and p not in FIELDS]


def _is_set(msg: Any, fd: Any) -> bool:
    if fd.is_repeated:
        return len(getattr(msg, fd.name)) > 0
    return bool(msg.HasField(fd.name))


def _value(msg: Any, fd: Any) -> Any:
    raw = getattr(msg, fd.name)
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        return dict(raw)
    if fd.json_name == "regions":
        return [REGIONS.get(r, str(r)) for r in raw]
    if fd.is_repeated:
        return list(raw)
    if fd.json_name == "type":
        return TYPES.get(raw)
    if fd.json_name == "expectedStatus":
        return json_format.MessageToDict(raw)
    return raw


def merge(current: dict[str, Any] | None, given: dict[str, Any], v: Violations, prefix: str = "") -> dict[str, Any]:
    """The monitor after applying ``given`` to ``current`` (None on create),
    with defaults filled and the old type's fields dropped on a type change.
    Refuses fields that do not apply to the resulting type."""
    base = dict(current or {})
    kind = given.get("type", base.get("type"))
    if current is not None and "type" in given and given["type"] != current.get("type"):
        base = {k: val for k, val in base.items() if k not in TYPED_FIELDS}
    merged = {**base, **given}
    allowed = COMMON_FIELDS | TYPE_FIELDS.get(kind or "", frozenset())
    for key, val in given.items():
        if key not in allowed and val is not None and kind in TYPE_FIELDS:
            v.add(f"{prefix}{key}", "custom", f"'{key}' does not apply to {kind} monitors")
    for key, default in {**DEFAULTS, **TYPE_DEFAULTS.get(kind or "", {})}.items():
        if merged.get(key) is None:
            merged[key] = default
    return {k: val for k, val in merged.items() if val is not None and val != {}}


def validate(m: dict[str, Any], v: Violations, prefix: str = "", *, allow_private: bool) -> list[FieldViolation]:
    """Checks a merged monitor; adds violations to ``v`` and returns the
    target problems (TARGET_NOT_ALLOWED) separately."""
    p = prefix
    name = m.get("name")
    if not isinstance(name, str) or not name.strip():
        v.add(f"{p}name", "required", "Required")
    elif len(name.strip()) > 200:
        v.add(f"{p}name", "too_big", "Must be at most 200 characters")
    else:
        m["name"] = name.strip()
    kind = m.get("type")
    if kind is None:
        v.add(f"{p}type", "required", "Required")
    if m["intervalSec"] not in INTERVALS:
        v.add(f"{p}intervalSec", "invalid_literal", "Expected one of " + ", ".join(map(str, INTERVALS)))
    timeout = m["timeoutMs"]
    if timeout < 1000:
        v.add(f"{p}timeoutMs", "too_small", "Must be at least 1000")
    elif timeout > 30000:
        v.add(f"{p}timeoutMs", "too_big", "Must be at most 30000")
    elif m["intervalSec"] in INTERVALS and timeout >= m["intervalSec"] * 1000:
        v.add(f"{p}timeoutMs", "too_big", f"Must be less than intervalSec × 1000 ({m['intervalSec'] * 1000})")
    for key in ("failureThreshold", "recoveryThreshold"):
        v.int_range(f"{p}{key}", m[key], 1, 10)
    _tags(m, v, p)
    _regions(m, kind, v, p)
    problems: list[FieldViolation] = []
    if kind in URL_TYPES:
        _url(m, kind, v, p, problems, allow_private)
    if kind in HOST_TYPES:
        _host(m, v, p, problems, allow_private)
    if kind == "tcp" and "port" not in m:
        v.add(f"{p}port", "required", "Required for tcp monitors")
    if "port" in m:
        v.int_range(f"{p}port", m["port"], 1, 65535)
    if kind in HTTP_TYPES:
        _http(m, kind, v, p)
    if kind == "dns":
        _dns(m, v, p, problems, allow_private)
    if kind == "tls":
        v.int_range(f"{p}tlsExpiryDays", m["tlsExpiryDays"], 1, 365)
    if kind == "heartbeat":
        _heartbeat(m, v, p)
    _alerts(m, v, p, problems, allow_private)
    return problems


def raise_target_problems(problems: list[FieldViolation]) -> None:
    if problems:
        first = problems[0]
        raise ObserveError(ErrorCode.ERROR_CODE_TARGET_NOT_ALLOWED, f"{first.path}: {first.message}", problems)


def _tags(m: dict[str, Any], v: Violations, p: str) -> None:
    tags = m["tags"]
    if len(tags) > 20:
        v.add(f"{p}tags", "too_big", "At most 20 tags")
    for i, tag in enumerate(tags):
        if not TAG_RE.match(tag):
            v.add(f"{p}tags[{i}]", "invalid_string", "Tags are 1–50 characters of a-z 0-9 - _ : .")
    m["tags"] = list(dict.fromkeys(tags))


def _regions(m: dict[str, Any], kind: str | None, v: Violations, p: str) -> None:
    regions = list(dict.fromkeys(m["regions"]))
    for i, region in enumerate(regions):
        if region not in REGION_NUMBERS:
            v.add(f"{p}regions[{i}]", "invalid_enum_value", "Expected one of " + ", ".join(REGION_NUMBERS))
        elif region != "local" and kind not in {"http", "https"}:
            v.add(f"{p}regions[{i}]", "custom", "Remote regions check http and https monitors only")
    m["regions"] = regions


def _target_problem(host: str, path: str, problems: list[FieldViolation], allow_private: bool) -> None:
    if allow_private:
        return
    problem = targets.static_target_problem(host)
    if problem:
        problems.append(FieldViolation(path, "custom", problem))


def _url(
    m: dict[str, Any], kind: str, v: Violations, p: str, problems: list[FieldViolation], allow_private: bool
) -> None:
    url = m.get("url")
    if not url:
        v.add(f"{p}url", "required", f"Required for {kind} monitors")
        return
    schemes = {"http": ("http",), "https": ("https",), "keyword": ("http", "https"), "tls": ("https",)}[kind]
    host = _check_url(url, schemes, f"{p}url", v)
    if host:
        _target_problem(host, f"{p}url", problems, allow_private)


def _check_url(url: str, schemes: tuple[str, ...], path: str, v: Violations) -> str | None:
    """The URL's host when it is an absolute URL with one of ``schemes``."""
    if len(url) > 2048:
        v.add(path, "too_big", "Must be at most 2048 characters")
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        v.add(path, "invalid_string", "Invalid URL")
        return None
    if parts.scheme not in schemes or not parts.hostname or any(c.isspace() for c in url):
        v.add(path, "invalid_string", f"Expected an absolute {' or '.join(schemes)} URL")
        return None
    return parts.hostname


def _host(m: dict[str, Any], v: Violations, p: str, problems: list[FieldViolation], allow_private: bool) -> None:
    host = m.get("host")
    if not host:
        v.add(f"{p}host", "required", f"Required for {m.get('type')} monitors")
        return
    if not (HOST_RE.match(host) or _is_ip(host)):
        v.add(f"{p}host", "invalid_string", "Expected a host name or an IP address")
        return
    if m.get("type") != "dns":  # a dns monitor's host is a name to resolve, not a target
        _target_problem(host, f"{p}host", problems, allow_private)


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _http(m: dict[str, Any], kind: str, v: Violations, p: str) -> None:
    method = m.get("method", "GET")
    if method not in METHODS:
        v.add(f"{p}method", "invalid_enum_value", "Expected one of " + ", ".join(METHODS))
    headers = m.get("headers") or {}
    if len(headers) > 50:
        v.add(f"{p}headers", "too_big", "At most 50 headers")
    for key, value in headers.items():
        if not HEADER_NAME_RE.match(key):
            v.add(f"{p}headers.{key}", "invalid_string", "Invalid header name")
        elif "\r" in value or "\n" in value or len(value) > 8192:
            v.add(f"{p}headers.{key}", "invalid_string", "Header values are one line of at most 8192 characters")
    body = m.get("body")
    if body is not None and len(body.encode()) > 65536:
        v.add(f"{p}body", "too_big", "Must be at most 65536 bytes")
    _expected_status(m, v, p)
    v.int_range(f"{p}maxRedirects", m["maxRedirects"], 0, 10)
    if kind == "keyword":
        keyword = m.get("keyword")
        if not keyword:
            v.add(f"{p}keyword", "required", "Required for keyword monitors")
        elif len(keyword) > 500:
            v.add(f"{p}keyword", "too_big", "Must be at most 500 characters")


def _expected_status(m: dict[str, Any], v: Violations, p: str) -> None:
    expected = m.get("expectedStatus")
    path = f"{p}expectedStatus"
    if expected is None:
        return
    if isinstance(expected, str):
        if expected not in STATUS_CLASSES:
            v.add(path, "invalid_literal", "Expected one of " + ", ".join(STATUS_CLASSES) + " or a list of codes")
        return
    if not isinstance(expected, list) or not expected:
        v.add(path, "invalid_type", 'Expected a non-empty list of status codes or a class such as "2xx"')
        return
    if len(expected) > 50:
        v.add(path, "too_big", "At most 50 status codes")
    codes: list[int] = []
    for i, code in enumerate(expected):
        if isinstance(code, bool) or not isinstance(code, (int, float)) or int(code) != code:
            v.add(f"{path}[{i}]", "invalid_type", "Expected an integer status code")
        elif not 100 <= code <= 599:
            v.add(f"{path}[{i}]", "too_small" if code < 100 else "too_big", "Status codes are 100–599")
        else:
            codes.append(int(code))
    m["expectedStatus"] = list(dict.fromkeys(codes)) if len(codes) == len(expected) else expected


def _dns(m: dict[str, Any], v: Violations, p: str, problems: list[FieldViolation], allow_private: bool) -> None:
    record = m.get("dnsRecordType", "A")
    if record not in DNS_RECORD_TYPES:
        v.add(f"{p}dnsRecordType", "invalid_enum_value", "Expected one of " + ", ".join(DNS_RECORD_TYPES))
    resolver = m.get("dnsResolver")
    if resolver is not None:
        host = resolver_host(resolver)
        if host is None:
            v.add(f"{p}dnsResolver", "invalid_string", 'Expected "ip" or "ip:port"')
        else:
            _target_problem(host, f"{p}dnsResolver", problems, allow_private)
    expected = m.get("expectedValue")
    if expected is not None and not 1 <= len(expected) <= 500:
        v.add(f"{p}expectedValue", "too_big" if expected else "too_small", "Must be 1–500 characters")


def resolver_host(text: str) -> str | None:
    """The IP of a resolver given as ip, ip:port or [ipv6]:port; None if malformed."""
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or None
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is not None and (not port.isdigit() or not 1 <= int(port) <= 65535):
        return None
    return host if _is_ip(host) else None


def _heartbeat(m: dict[str, Any], v: Violations, p: str) -> None:
    v.int_range(f"{p}graceSec", m["graceSec"], 0, 86400)
    tz = m.get("timezone", "UTC")
    try:
        zone = zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        v.add(f"{p}timezone", "invalid_string", "Unknown IANA time zone")
        zone = None
    cron = m.get("cron")
    if cron is not None:
        try:
            CronSim(cron, clock.now().astimezone(zone) if zone else clock.now())
        except CronSimError as exc:
            v.add(f"{p}cron", "invalid_string", f"Invalid cron expression: {exc}")


def _alerts(m: dict[str, Any], v: Violations, p: str, problems: list[FieldViolation], allow_private: bool) -> None:
    # Length and one line only: the API page's own example sends the value
    # "[email protected]" (an address its CDN obfuscated) and must succeed.
    email = m.get("alertEmail")
    if email is not None and (not 3 <= len(email) <= 320 or any(ch in email for ch in "\r\n\t\x00")):
        v.add(f"{p}alertEmail", "invalid_string", "Expected an e-mail address of 3–320 characters on one line")
    for key in ("alertSlackUrl", "alertWebhookUrl", "alertDiscordUrl"):
        url = m.get(key)
        if url is not None:
            host = _check_url(url, ("https", "http"), f"{p}{key}", v)
            if host:
                _target_problem(host, f"{p}{key}", problems, allow_private)
    token, chat = m.get("alertTelegramBotToken"), m.get("alertTelegramChatId")
    if token is not None and not TELEGRAM_TOKEN_RE.match(token):
        v.add(f"{p}alertTelegramBotToken", "invalid_string", "Expected a bot token such as 123456:ABC…")
    if chat is not None and not TELEGRAM_CHAT_RE.match(chat):
        v.add(f"{p}alertTelegramChatId", "invalid_string", "Expected a numeric chat id or @channelname")
    if (token is None) != (chat is None):
        missing = "alertTelegramChatId" if chat is None else "alertTelegramBotToken"
        v.add(f"{p}{missing}", "required", "Telegram alerts need both a bot token and a chat id")
