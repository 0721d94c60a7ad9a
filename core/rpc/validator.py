"""Request rules declared in the proto, enforced for both transports.

Fields and messages carry standard ``buf.validate`` annotations; protovalidate
(the Rust engine, compiled once per message type and cached) checks a
message against them, and this module words each violation in the contract's
vocabulary (CONTRACT.md, "JSON rules")::

    protovalidate violation ──► FieldViolation(path, code, message)
      field path (numbers)        monitors[3].intervalSec  (JSON names)
      rule path  (int32.in)       invalid_literal
      rule value ([30, 60, …])    "Expected one of 30, 60, 300, 900, 1800, 3600"

CEL rules say their code in their ``id``. A field's rule: ``"<code>"`` or
``"<code>.<name>"``. A message's rule cannot name a field otherwise, so its
id does: ``"<proto_field>.<code>[.<name>]"`` (``"timeout_ms.too_big"``)
reports on that field of the message, a bare ``"<code>"`` on the message
itself. The rule's ``message`` (or the string its expression returns) is
shown as is.

A request whose method has an ``update_mask`` is a patch: only the values it
gives are checked here (``required`` and message-level rules of the patched
message are left out); the service checks the merged result with
:meth:`RequestValidator.check` once it has it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import protovalidate
from buf.validate import validate_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from observe.v1 import options_pb2

from core.errors import ErrorCode, FieldViolation, ObserveError, validation_failed
from core.rpc.jsonmap import TIMESTAMP_MAX, TIMESTAMP_MIN, TIMESTAMP_RANGE, enum_json_names

FD = FieldDescriptor
# What a name's "[^\t\n\v\f\r ]" pattern (a character other than these) and
# the trimming after it agree on; str.strip() alone would take Unicode
# spaces too, which the pattern lets through.
ASCII_SPACES = " \t\n\v\f\r"
# The codes a CEL rule id may name (CONTRACT.md's vocabulary).
CODES = frozenset(
    {"required", "invalid_type", "invalid_literal", "invalid_enum_value", "too_small", "too_big", "invalid_string",
     "unrecognized_keys", "custom"}
)  # fmt: skip
_STRING_FORMATS = {
    "email": "Expected an e-mail address",
    "uri": "Expected an absolute URI",
    "uri_ref": "Expected a URI reference",
    "hostname": "Expected a host name",
    "ip": "Expected an IP address",
    "ipv4": "Expected an IPv4 address",
    "ipv6": "Expected an IPv6 address",
    "address": "Expected a host name or an IP address",
    "host_and_port": "Expected host:port",
    "uuid": "Expected a UUID",
}


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the validator needs to know of one request type."""

    strip: str  # the REST body field: its paths are reported without it ("monitor.")
    patch: bool  # the request carries an update_mask


class RequestValidator:
    """One protovalidate engine for the process; thread-safe and cached."""

    def __init__(self) -> None:
        self._engine = protovalidate.Validator()

    def violations(self, message: Message, *, strip: str = "", patch: bool = False) -> list[FieldViolation]:
        """Every rule ``message`` breaks, in the contract's words. A bulk list
        over its size raises BULK_LIMIT_EXCEEDED (``(observe.v1.field).bulk``)."""
        found = self._engine.collect_violations(message)
        # Serialised, a message without a zero byte holds no U+0000: the walk
        # is for the few that have one (an explicit 0, a NUL in a string).
        nul = _nul_paths(message, "") if b"\x00" in message.SerializeToString() else []
        # JSON times are range-checked as they are parsed (core.rpc.jsonmap);
        # a gRPC caller can send any seconds, which no store or sum can take.
        times = _bad_times(message, "") if _holds_times(message.DESCRIPTOR) else []
        if not found and not nul and not times:
            return []
        fields: list[FieldViolation] = []
        across: list[FieldViolation] = []  # message-level rules
        for violation in found:
            proto = violation.proto
            path, fd = _walk(message.DESCRIPTOR, proto.field.elements if proto.field else ())
            rule_names = [e.field_name for e in proto.rule.elements] if proto.rule else []
            message_level = not rule_names
            if patch and ((message_level and path) or (rule_names == ["required"] and ("." in path or "[" in path))):
                continue  # judged on the merged result by the service
            if rule_names == ["repeated", "max_items"] and fd and fd.GetOptions().Extensions[options_pb2.field].bulk:
                raise ObserveError(
                    ErrorCode.ERROR_CODE_BULK_LIMIT_EXCEEDED,
                    f"at most {violation.rule_value} {path} per bulk call; got {len(violation.field_value)}",
                )
            desc = message.DESCRIPTOR if fd is None else fd.message_type
            (across if message_level else fields).append(_word(violation, path, fd, rule_names, desc))
        seen = {f.path for f in fields}
        fields += [FieldViolation(p, "invalid_string", "Must not contain U+0000") for p in nul if p not in seen]
        fields += [FieldViolation(p, "invalid_string", TIMESTAMP_RANGE) for p in times if p not in seen]
        # A field wrong on its own is not judged against the others as well.
        wrong = {f.path for f in fields}
        out = fields + [f for f in across if f.path not in wrong]
        if strip:
            out = [FieldViolation(_strip(v.path, strip), v.code, v.message) for v in out]
        return out

    def check(self, message: Message, *, prefix: str = "", strip: str = "", patch: bool = False) -> None:
        """Raises VALIDATION_FAILED listing every violation (paths under ``prefix``)."""
        found = self.violations(message, strip=strip, patch=patch)
        if found:
            raise validation_failed([FieldViolation(_join(prefix, v.path), v.code, v.message) for v in found])

    def check_request(self, message: Message, body_field: str) -> None:
        """The pipeline's check of a request as it arrived."""
        shape = _shape(message.DESCRIPTOR, body_field)
        self.check(message, strip=shape.strip, patch=shape.patch)


@cache
def _shape(desc: Descriptor, body_field: str) -> _Shape:
    patch = any(
        fd.message_type is not None and fd.message_type.full_name == "google.protobuf.FieldMask" for fd in desc.fields
    )
    strip = ""
    if body_field and body_field != "*" and body_field in desc.fields_by_name:
        strip = desc.fields_by_name[body_field].json_name
    return _Shape(strip=strip, patch=patch)


def _nul_paths(message: Message, prefix: str) -> list[str]:
    """Paths of strings holding U+0000, which no store keeps (CONTRACT.md,
    "Input hygiene"): a rule of every string field, so it lives here once."""
    out: list[str] = []
    for fd, value in message.ListFields():
        path = f"{prefix}{fd.json_name}"
        if fd.type == FD.TYPE_STRING:
            if fd.is_repeated:
                out += [f"{path}[{i}]" for i, item in enumerate(value) if "\x00" in item]
            elif "\x00" in value:
                out.append(path)
        elif fd.type == FD.TYPE_MESSAGE:
            entry: Any = fd.message_type
            if entry.GetOptions().map_entry:
                keys, values = entry.fields_by_name["key"], entry.fields_by_name["value"]
                for key, item in value.items():
                    if keys.type == FD.TYPE_STRING and "\x00" in key:
                        out.append(path)
                    if values.type == FD.TYPE_STRING and "\x00" in item:
                        out.append(f"{path}.{key}")
                    elif values.type == FD.TYPE_MESSAGE:
                        out += _nul_paths(item, f"{path}.{key}.")
            elif fd.is_repeated:
                for i, item in enumerate(value):
                    out += _nul_paths(item, f"{path}[{i}].")
            elif entry.full_name != "google.protobuf.Value" or value.WhichOneof("kind") in (
                "struct_value",
                "list_value",
            ):
                out += _nul_paths(value, f"{path}.")
            elif value.WhichOneof("kind") == "string_value" and "\x00" in value.string_value:
                out.append(path)
    return out


@cache
def _holds_times(desc: Descriptor, depth: int = 0) -> bool:
    """Whether a message of this type can carry a Timestamp (a few levels deep)."""
    for fd in desc.fields:
        sub: Any = fd.message_type
        if sub is None or sub.GetOptions().map_entry:
            continue
        if sub.full_name == "google.protobuf.Timestamp" or (depth < 4 and _holds_times(sub, depth + 1)):
            return True
    return False


def _bad_times(message: Message, prefix: str) -> list[str]:
    """Paths of Timestamps outside what google.protobuf.Timestamp allows:
    0001-01-01 to 9999-12-31, UTC."""
    out: list[str] = []
    for fd, value in message.ListFields():
        sub: Any = fd.message_type
        if sub is None or sub.GetOptions().map_entry:
            continue
        path = f"{prefix}{fd.json_name}"
        items = list(enumerate(value)) if fd.is_repeated else [(None, value)]
        for i, item in items:
            at = path if i is None else f"{path}[{i}]"
            if sub.full_name == "google.protobuf.Timestamp":
                if not (TIMESTAMP_MIN <= item.seconds <= TIMESTAMP_MAX and 0 <= item.nanos < 10**9):
                    out.append(at)
            elif _holds_times(sub):
                out += _bad_times(item, f"{at}.")
    return out


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix.rstrip(".")
    return prefix + path if path.startswith("[") or prefix.endswith(".") else f"{prefix}.{path}"


def _strip(path: str, field: str) -> str:
    if path == field:
        return ""
    for sep in (".", "["):
        if path.startswith(field + sep):
            rest = path[len(field) :]
            return rest[1:] if sep == "." else rest
    return path


def _walk(desc: Any, elements: Iterable[Any]) -> tuple[str, Any]:
    """The JSON path of a protovalidate field path and the field it ends on
    (None at the top of the message)."""
    path, fd = "", None
    for element in elements:
        fd = desc.fields_by_number[element.field_number]
        path = f"{path}.{fd.json_name}" if path else fd.json_name
        sub = element.subscript  # protobuf-py's oneof: None or (field, value)
        kind = sub.field if sub is not None else None
        if kind == "string_key":
            path += f".{sub.value}"
        elif kind is not None:
            path += f"[{sub.value}]"
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                value = fd.message_type.fields_by_name["value"]
                desc = value.message_type if kind is not None and value.message_type is not None else desc
            else:
                desc = fd.message_type
    return path, fd


def _word(violation: Any, path: str, fd: Any, rule_names: list[str], desc: Any) -> FieldViolation:
    proto = violation.proto
    if not rule_names:
        return _cel(proto, path, desc)
    if "cel" in rule_names:
        return _cel(proto, path, None)
    rule = rule_names[-1]
    family = rule_names[-2] if len(rule_names) > 1 else ""
    value = violation.field_value
    if rule == "required":
        return FieldViolation(path, "required", "Required")
    if family == "enum" or (fd is not None and fd.enum_type is not None and family in ("", "items")):
        if rule == "not_in" and value == 0:
            return FieldViolation(path, "required", "Required")
        names = ", ".join(enum_json_names(fd.enum_type).values()) if fd is not None else ""
        return FieldViolation(path, "invalid_enum_value", f"Expected one of {names}" if names else "Invalid value")
    if rule in ("in", "const"):
        allowed = violation.rule_value if rule == "in" else [violation.rule_value]
        code = "invalid_enum_value" if family == "string" else "invalid_literal"
        return FieldViolation(path, code, "Expected one of " + ", ".join(_show(a) for a in allowed))
    if rule == "not_in":
        return FieldViolation(path, "invalid_literal", f"Must not be {_show(value)}")
    if family in ("string", "bytes"):
        worded = _string_rule(path, rule, value, violation.rule_value)
        custom = fd.GetOptions().Extensions[options_pb2.field].pattern_message if fd is not None else ""
        if custom and worded.code == "invalid_string":
            return FieldViolation(path, worded.code, custom)
        return worded
    if family in ("repeated", "map"):
        unit = "items" if family == "repeated" else "entries"
        if rule in ("min_items", "min_pairs"):
            return FieldViolation(path, "too_small", f"At least {violation.rule_value} {unit}")
        if rule in ("max_items", "max_pairs"):
            return FieldViolation(path, "too_big", f"At most {violation.rule_value} {unit}")
        if rule == "unique":
            return FieldViolation(path, "custom", "Items must be unique")
    if family == "timestamp":
        if rule in ("gt_now", "gte"):
            return FieldViolation(path, "too_small", "Must be in the future" if rule == "gt_now" else proto.message)
        if rule in ("lt_now", "lte", "within"):
            return FieldViolation(path, "too_big", "Must be in the past" if rule == "lt_now" else proto.message)
    if rule in ("gt", "gte", "lt", "lte"):
        return _range(path, fd, rule_names[:-1], value)
    return FieldViolation(path, "custom", proto.message)


def _cel(proto: Any, path: str, message: Any) -> FieldViolation:
    """A CEL rule's violation; ``message`` is the descriptor of the message
    a message-level rule sits on (None for a field's rule)."""
    parts = (proto.rule_id or "").split(".")
    code = parts[0]
    if message is not None and len(parts) > 1 and parts[0] in message.fields_by_name:
        code = parts[1]
        name = message.fields_by_name[parts[0]].json_name
        path = f"{path}.{name}" if path else name
    return FieldViolation(path, code if code in CODES else "custom", proto.message)


def _string_rule(path: str, rule: str, value: Any, limit: Any) -> FieldViolation:
    unit = "bytes" if rule.endswith("_bytes") else "characters"
    if rule in ("min_len", "min_bytes"):
        if value in ("", b""):
            return FieldViolation(path, "required", "Required")
        return FieldViolation(path, "too_small", f"Must be at least {limit} {unit}")
    if rule in ("max_len", "max_bytes"):
        return FieldViolation(path, "too_big", f"Must be at most {limit} {unit}")
    if rule == "len":
        return FieldViolation(path, "invalid_string", f"Must be exactly {limit} {unit}")
    if rule == "pattern":
        return FieldViolation(path, "invalid_string", f"Must match {limit}")
    if rule in _STRING_FORMATS:
        return FieldViolation(path, "invalid_string", _STRING_FORMATS[rule])
    if rule in ("prefix", "suffix", "contains", "not_contains"):
        return FieldViolation(path, "invalid_string", f"Must {rule.replace('_', ' ')} '{limit}'")
    return FieldViolation(path, "invalid_string", "Invalid string")


def _range(path: str, fd: Any, rule_path: list[str], value: Any) -> FieldViolation:
    """too_small or too_big for a number outside its bounds; the message names
    the bound it crossed, as ``Must be at least 1000``."""
    if fd is None:
        return FieldViolation(path, "custom", "Out of range")
    rules: Any = fd.GetOptions().Extensions[validate_pb2.field]
    for name in rule_path:  # e.g. repeated.items.int32
        rules = getattr(rules, name)
    if rules.HasField("gte") and value < rules.gte:
        return FieldViolation(path, "too_small", f"Must be at least {_show(rules.gte)}")
    if rules.HasField("gt") and value <= rules.gt:
        return FieldViolation(path, "too_small", f"Must be greater than {_show(rules.gt)}")
    if rules.HasField("lte") and value > rules.lte:
        return FieldViolation(path, "too_big", f"Must be at most {_show(rules.lte)}")
    if rules.HasField("lt"):
        return FieldViolation(path, "too_big", f"Must be less than {_show(rules.lt)}")
    return FieldViolation(path, "custom", "Out of range")


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


VALIDATOR = RequestValidator()
"""The process's validator (protovalidate caches compiled rules per instance)."""
