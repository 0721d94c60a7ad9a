"""A monitor's settings after a create or a patch: merging, defaults, and
the check of the result, so cross-field rules (timeoutMs below the interval,
a url fitting the type) hold for the monitor, not just the request. The
rules themselves are monitors.proto's buf.validate annotations; what stays
here needs a library (cron, time zones), the target policy, or looks at a
google.protobuf.Value (expectedStatus, whose JSON Schema the proto declares).
Settings travel as a dict in API field names."""

from __future__ import annotations

import ipaddress
import zoneinfo
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from buf.validate import validate_pb2
from cronsim import CronSim, CronSimError
from google.protobuf import json_format
from observe.v1 import monitors_pb2

from core import clock
from core.checks import targets
from core.errors import ErrorCode, FieldViolation, ObserveError, Violations
from core.rpc import patches
from core.rpc.jsonmap import enum_json_names
from core.rpc.validator import ASCII_SPACES, VALIDATOR

TYPES = enum_json_names(monitors_pb2.MonitorType.DESCRIPTOR)
TYPE_NUMBERS = {name: number for number, name in TYPES.items()}
REGIONS = enum_json_names(monitors_pb2.Region.DESCRIPTOR)
REGION_NUMBERS = {name: number for number, name in REGIONS.items()}

HTTP_TYPES = frozenset({"http", "https", "keyword"})
URL_TYPES = HTTP_TYPES | {"tls"}
HOST_TYPES = frozenset({"tcp", "ping", "dns"})
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

SECRET_FIELDS = (
    "headers",
    "alertSlackUrl",
    "alertWebhookUrl",
    "alertDiscordUrl",
    "alertTelegramBotToken",
    "alertTelegramChatId",
)
# The fields that belong to some types only: those monitors.proto gives a
# "<field>.custom.type" rule. A type change drops the old type's.
TYPED_FIELDS = frozenset(
    monitors_pb2.MonitorInput.DESCRIPTOR.fields_by_name[rule.id.split(".")[0]].json_name
    for rule in monitors_pb2.MonitorInput.DESCRIPTOR.GetOptions().Extensions[validate_pb2.message].cel
    if rule.id.endswith(".custom.type")
)
DEFAULTS: dict[str, Any] = {
    "intervalSec": 60,
    "timeoutMs": 10000,
    "failureThreshold": 2,
    "recoveryThreshold": 1,
    "tags": [],
    "regions": ["local"],
    "paused": False,
    "publicBadge": False,
    "alertRepeatIntervalMin": 0,
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


def present_fields(msg: monitors_pb2.MonitorInput, mask: Iterable[str] | None = None) -> dict[str, Any]:
    """The fields a create or patch gives, in API names (core.rpc.patches); an unset one is None, i.e. cleared."""
    return {fd.json_name: _value(msg, fd) if given else None for fd, given in patches.given_fields(msg, mask)}


def unknown_mask_paths(mask: Iterable[str]) -> list[str]:
    return patches.unknown_mask_paths(monitors_pb2.MonitorInput.DESCRIPTOR, mask)


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


def merge(current: dict[str, Any] | None, given: dict[str, Any]) -> dict[str, Any]:
    """The monitor after applying ``given`` to ``current`` (None on create),
    with defaults filled and the old type's fields dropped on a type change.
    A field given that does not apply to the resulting type stays, for the
    proto's rule to refuse."""
    base = dict(current or {})
    kind = given.get("type", base.get("type"))
    if current is not None and "type" in given and given["type"] != current.get("type"):
        base = {k: val for k, val in base.items() if k not in TYPED_FIELDS}
    merged = {**base, **given}
    for key, default in {**DEFAULTS, **TYPE_DEFAULTS.get(kind or "", {})}.items():
        if merged.get(key) is None:
            merged[key] = default
    return {k: val for k, val in merged.items() if val is not None and val != {}}


def validate(
    m: dict[str, Any], v: Violations, prefix: str = "", *, allow_private: bool, patched: bool = True
) -> list[FieldViolation]:
    """Checks a merged monitor: the proto's rules (monitors.proto) through the
    one validator, then the few that need a library (cron, time zones) or the
    target policy; adds violations to ``v`` and returns the target problems
    (TARGET_NOT_ALLOWED) separately. A new monitor (``patched=False``) skips
    the proto's rules: the pipeline checked the whole request against them,
    and the defaults merged in since meet them."""
    p = prefix
    if isinstance(m.get("name"), str):  # the proto's pattern: more than ASCII spaces, which are trimmed
        m["name"] = m["name"].strip(ASCII_SPACES)
    m["tags"] = list(dict.fromkeys(m["tags"]))
    m["regions"] = list(dict.fromkeys(m["regions"]))
    if patched:
        v.items.extend(
            FieldViolation(f"{p}{f.path}", f.code, f.message) for f in VALIDATOR.violations(as_input(m), patch=False)
        )
    kind = m.get("type")
    if kind in HTTP_TYPES:
        _expected_status(m, v, p)
    if kind == "heartbeat":
        _heartbeat(m, v, p)
    problems: list[FieldViolation] = []
    if not allow_private:
        for key, host in _targets(m):
            problem = targets.static_target_problem(host)
            if problem:
                problems.append(FieldViolation(f"{p}{key}", "custom", problem))
    return problems


def as_input(m: dict[str, Any]) -> monitors_pb2.MonitorInput:
    """Settings in API field names as a MonitorInput."""
    msg = monitors_pb2.MonitorInput()
    for key, value in m.items():
        fd = FIELDS.get(key)
        if fd is None or value is None:
            continue
        if key == "type":
            msg.type = TYPE_NUMBERS[value]  # type: ignore[assignment]
        elif key == "regions":
            msg.regions.extend(REGION_NUMBERS[r] for r in value)  # type: ignore[misc]
        elif key == "headers":
            msg.headers.update(value)
        elif key == "tags":
            msg.tags.extend(value)
        elif key == "expectedStatus":
            json_format.ParseDict(value, msg.expected_status)
        else:
            setattr(msg, fd.name, value)
    return msg


def _targets(m: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, host) of every address the monitor will connect to, for the
    target policy (checked again on the resolved address at connect time)."""
    out: list[tuple[str, str]] = []
    kind = m.get("type")
    for key in ("url", "alertSlackUrl", "alertWebhookUrl", "alertDiscordUrl"):
        if m.get(key) and (key != "url" or kind in URL_TYPES):
            try:
                host = urlsplit(m[key]).hostname
            except ValueError:
                host = None
            if host:
                out.append((key, host))
    if kind in HOST_TYPES and kind != "dns" and m.get("host"):  # a dns monitor's host is a name, not a target
        out.append(("host", m["host"]))
    if kind == "dns" and m.get("dnsResolver"):
        host = resolver_host(m["dnsResolver"])
        if host:
            out.append(("dnsResolver", host))
    return out


def raise_target_problems(problems: list[FieldViolation]) -> None:
    if problems:
        first = problems[0]
        raise ObserveError(ErrorCode.ERROR_CODE_TARGET_NOT_ALLOWED, f"{first.path}: {first.message}", problems)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


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
