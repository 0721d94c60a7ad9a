"""Protobuf ⇄ JSON per CONTRACT.md, compiled once per message type.

Differs from proto3 JSON (``json_format``) where the contract says so:
64-bit integers are JSON numbers; every field is present in output (unset
``optional`` scalars and messages as ``null``, empty lists as ``[]``);
enums are lower-case names without their prefix (``ROLE_OWNER`` → ``"owner"``);
timestamps are RFC 3339 UTC with ``Z``, in whole seconds except check, ping
and log times (``(observe.v1.field).milliseconds``), which always show three
decimals (``2026-05-13T18:00:00.250Z``). Input is strict: unknown keys, wrong
types and bad values are collected as field violations with JSON paths
(``monitors[3].intervalSec``) rather than failing on the first.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from observe.v1 import options_pb2

from core.errors import Violations

FD = FieldDescriptor
# types-protobuf marks message_type and enum_type Optional and tells upb and
# pure-Python descriptor classes apart; this code checks a field's type tag
# before it touches either, so descriptors are typed loosely here.
AnyDesc = Any
AnyField = Any
AnyEnum = Any
_INT_TYPES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOAT_TYPES = {FD.TYPE_FLOAT, FD.TYPE_DOUBLE}
_WRAPPERS = {
    f"google.protobuf.{n}"
    for n in (
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
}
_JSON_WKT = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any"}


def snake_to_camel(path: str) -> str:
    """A FieldMask path in its JSON form: ``alert_slack_url`` → ``alertSlackUrl``."""
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), path)


def _camel_to_snake(path: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), path)


def enum_prefix(enum: AnyEnum) -> str:
    """``RateLimitClass`` → ``RATE_LIMIT_CLASS_``: what value names drop in JSON."""
    name = enum.name
    out = [c if not c.isupper() or i == 0 or name[i - 1].isupper() else "_" + c for i, c in enumerate(name)]
    return "".join(out).upper() + "_"


def enum_json_names(enum: AnyEnum) -> dict[int, str]:
    """Number → JSON name for every value but the zero ("unspecified") one."""
    prefix = enum_prefix(enum)
    return {v.number: v.name.removeprefix(prefix).lower() for v in enum.values if v.number != 0}


def format_timestamp(seconds: int, nanos: int, *, millis: bool = False) -> str:
    """RFC 3339 UTC: whole seconds (truncated), or with ``millis`` always three decimals."""
    dt = datetime.fromtimestamp(seconds, UTC)
    text = f"{dt.year:04d}" + dt.strftime("-%m-%dT%H:%M:%S")  # %Y does not pad years before 1000
    if millis:
        text += f".{nanos // 1_000_000:03d}"
    return text + "Z"


# What google.protobuf.Timestamp (and so every store and computation of ours)
# can hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
TIMESTAMP_MIN = -62135596800
TIMESTAMP_MAX = 253402300799
TIMESTAMP_RANGE = "Out of range: must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"


def parse_timestamp(text: str) -> tuple[int, int] | None:
    """RFC 3339 with an explicit offset → (seconds, nanos); None if invalid.
    The seconds may lie outside [TIMESTAMP_MIN, TIMESTAMP_MAX] once the offset
    is applied (``9999-12-31T23:59:59-14:00``): callers check the range."""
    if not isinstance(text, str) or len(text) < 20 or text[10] not in "Tt":
        return None
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    seconds = math.floor(dt.timestamp())
    return seconds, dt.microsecond * 1000


def _integral(value: Any) -> Any:
    """Struct numbers are doubles; 60.0 goes out as 60, as it came in."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _invalid_type(v: Violations, path: str, expected: str, value: Any) -> None:
    v.add(path, "invalid_type", f"Expected {expected}, received {_type_name(value)}")


def _exact_type(pytype: type, expected: str) -> Callable[[Any, str, Violations], Any]:
    """A parser accepting only JSON values of ``pytype`` (bool, str)."""

    def parse(value: Any, path: str, v: Violations) -> Any:
        if not isinstance(value, pytype):
            _invalid_type(v, path, expected, value)
            return None
        return value

    return parse


Encoder = Callable[[Message], Any]
Decoder = Callable[[Message, Any, str, Violations], None]


class JsonCodec:
    """Encoders and decoders per message type, built on first use and cached."""

    def __init__(self) -> None:
        self._encoders: dict[str, list[tuple[str, Encoder]]] = {}
        self._decoders: dict[str, dict[str, tuple[AnyField, Decoder]]] = {}

    # ---- output -------------------------------------------------------

    def encode(self, msg: Message) -> dict[str, Any]:
        """The JSON object (as Python values) for ``msg``."""
        name = msg.DESCRIPTOR.full_name
        fields = self._encoders.get(name)
        if fields is None:
            fields = self._compile_encoder(msg.DESCRIPTOR)
        return {key: fn(msg) for key, fn in fields}

    def encode_value(self, msg: Message) -> Any:
        """Like :meth:`encode`, but a well-known type becomes its JSON form."""
        full = msg.DESCRIPTOR.full_name
        if full.startswith("google.protobuf."):
            return self._wkt_to_json(msg)
        return self.encode(msg)

    def _wkt_to_json(self, msg: Message) -> Any:
        full = msg.DESCRIPTOR.full_name
        if full == "google.protobuf.Timestamp":
            return format_timestamp(msg.seconds, msg.nanos)  # type: ignore[attr-defined]
        if full in _WRAPPERS:
            return msg.value  # type: ignore[attr-defined]
        if full == "google.protobuf.FieldMask":
            return ",".join(snake_to_camel(p) for p in msg.paths)  # type: ignore[attr-defined]
        if full == "google.protobuf.Empty":
            return {}
        return _integral(json_format.MessageToDict(msg, preserving_proto_field_name=False))

    def _compile_encoder(self, desc: AnyDesc) -> list[tuple[str, Encoder]]:
        fields: list[tuple[str, Encoder]] = []
        self._encoders[desc.full_name] = fields  # recursion guard for self-referencing types
        for fd in desc.fields:
            if fd.GetOptions().Extensions[options_pb2.field].alternate_media_type:
                continue  # sent instead of the JSON reply, never inside it
            fields.append((fd.json_name, self._field_encoder(fd)))
        return fields

    def _scalar_encoder(self, fd: AnyField) -> Callable[[Any], Any] | None:
        if fd.type == FD.TYPE_ENUM:
            names = enum_json_names(fd.enum_type)
            return names.get
        if fd.type == FD.TYPE_BYTES:
            return lambda b: base64.b64encode(b).decode()
        if fd.type in _FLOAT_TYPES:
            return lambda f: (
                f if math.isfinite(f) else ("NaN" if math.isnan(f) else ("Infinity" if f > 0 else "-Infinity"))
            )
        return None

    def _field_encoder(self, fd: AnyField) -> Encoder:
        name = fd.name
        if fd.type == FD.TYPE_MESSAGE:
            sub = fd.message_type
            if sub.GetOptions().map_entry:
                value_fd = sub.fields_by_name["value"]
                if value_fd.type == FD.TYPE_MESSAGE:
                    return lambda m: {str(k): self.encode_value(v) for k, v in getattr(m, name).items()}
                value_conv = self._scalar_encoder(value_fd)
                if value_conv is None:
                    return lambda m: {str(k): v for k, v in getattr(m, name).items()}
                return lambda m: {str(k): value_conv(v) for k, v in getattr(m, name).items()}
            if fd.is_repeated:
                return lambda m: [self.encode_value(x) for x in getattr(m, name)]
            if sub.full_name == "google.protobuf.Timestamp":
                # (observe.v1.field).milliseconds: when a check, ping or log line
                # happened; every other time in a reply is whole seconds.
                millis = fd.GetOptions().Extensions[options_pb2.field].milliseconds

                def timestamp(m: Message) -> str | None:
                    if not m.HasField(name):
                        return None
                    ts: Any = getattr(m, name)
                    return format_timestamp(ts.seconds, ts.nanos, millis=millis)

                return timestamp
            return lambda m: self.encode_value(getattr(m, name)) if m.HasField(name) else None
        conv = self._scalar_encoder(fd)
        if fd.is_repeated:
            if conv is None:
                return lambda m: list(getattr(m, name))
            return lambda m: [conv(x) for x in getattr(m, name)]
        if fd.has_presence:
            if conv is None:
                return lambda m: getattr(m, name) if m.HasField(name) else None
            return lambda m: conv(getattr(m, name)) if m.HasField(name) else None
        if conv is None:
            return lambda m: getattr(m, name)
        return lambda m: conv(getattr(m, name))

    # ---- input --------------------------------------------------------

    def decode_object(self, msg: Message, data: Any, path: str, v: Violations) -> None:
        """Merges the JSON object ``data`` into ``msg``; problems go to ``v``."""
        if not isinstance(data, dict):
            _invalid_type(v, path, "object", data)
            return
        table = self._decoders.get(msg.DESCRIPTOR.full_name)
        if table is None:
            table = self._compile_decoder(msg.DESCRIPTOR)
        prefix = f"{path}." if path else ""
        for key, value in data.items():
            entry = table.get(key)
            if entry is None:
                v.add(f"{prefix}{key}", "unrecognized_keys", f"Unrecognized key: '{key}'")
                continue
            if value is None:
                continue  # null: leave the field unset
            entry[1](msg, value, f"{prefix}{entry[0].json_name}", v)

    def field_table(self, desc: AnyDesc) -> dict[str, tuple[AnyField, Decoder]]:
        """Field lookup by JSON name and by proto name."""
        table = self._decoders.get(desc.full_name)
        return table if table is not None else self._compile_decoder(desc)

    def _compile_decoder(self, desc: AnyDesc) -> dict[str, tuple[AnyField, Decoder]]:
        table: dict[str, tuple[AnyField, Decoder]] = {}
        self._decoders[desc.full_name] = table
        for fd in desc.fields:
            entry = (fd, self._field_decoder(fd))
            table[fd.json_name] = entry
            table[fd.name] = entry
        return table

    def _field_decoder(self, fd: AnyField) -> Decoder:
        name = fd.name
        if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            key_fd = fd.message_type.fields_by_name["key"]
            value_fd = fd.message_type.fields_by_name["value"]
            parse_value = self._single_value_parser(value_fd)
            key_is_str = key_fd.type == FD.TYPE_STRING

            def decode_map(m: Message, value: Any, path: str, v: Violations) -> None:
                if not isinstance(value, dict):
                    _invalid_type(v, path, "object", value)
                    return
                target = getattr(m, name)
                for k, item in value.items():
                    key: Any = k
                    if not key_is_str:
                        key = parse_scalar_text(key_fd, k, f"{path}.{k}", v)
                        if key is None:
                            continue
                    if value_fd.type == FD.TYPE_MESSAGE:
                        self._decode_message(target[key], item, f"{path}.{k}", v)
                    else:
                        parsed = parse_value(item, f"{path}.{k}", v)
                        if parsed is not None:
                            target[key] = parsed

            return decode_map
        if fd.is_repeated:
            if fd.type == FD.TYPE_MESSAGE:

                def decode_messages(m: Message, value: Any, path: str, v: Violations) -> None:
                    if not isinstance(value, list):
                        _invalid_type(v, path, "array", value)
                        return
                    target = getattr(m, name)
                    for i, item in enumerate(value):
                        self._decode_message(target.add(), item, f"{path}[{i}]", v)

                return decode_messages
            parse_item = self._single_value_parser(fd)

            def decode_list(m: Message, value: Any, path: str, v: Violations) -> None:
                if not isinstance(value, list):
                    _invalid_type(v, path, "array", value)
                    return
                items = [parse_item(item, f"{path}[{i}]", v) for i, item in enumerate(value)]
                getattr(m, name).extend(x for x in items if x is not None)

            return decode_list
        if fd.type == FD.TYPE_MESSAGE:

            def decode_sub(m: Message, value: Any, path: str, v: Violations) -> None:
                self._decode_message(getattr(m, name), value, path, v)

            return decode_sub
        parse = self._single_value_parser(fd)

        def decode_scalar(m: Message, value: Any, path: str, v: Violations) -> None:
            parsed = parse(value, path, v)
            if parsed is not None:
                setattr(m, name, parsed)

        return decode_scalar

    def _decode_message(self, target: Message, value: Any, path: str, v: Violations) -> None:
        full = target.DESCRIPTOR.full_name
        if full == "google.protobuf.Timestamp":
            parsed = parse_timestamp(value) if isinstance(value, str) else None
            if parsed is None:
                if isinstance(value, str):
                    v.add(path, "invalid_string", "Invalid datetime; expected RFC 3339, e.g. 2026-05-13T18:00:00Z")
                else:
                    _invalid_type(v, path, "string", value)
                return
            if not TIMESTAMP_MIN <= parsed[0] <= TIMESTAMP_MAX:
                v.add(path, "invalid_string", TIMESTAMP_RANGE)
                return
            target.seconds, target.nanos = parsed  # type: ignore[attr-defined]
            return
        if full in _WRAPPERS:
            parse = self._single_value_parser(target.DESCRIPTOR.fields_by_name["value"])
            parsed = parse(value, path, v)
            if parsed is not None:
                target.value = parsed  # type: ignore[attr-defined]
            return
        if full == "google.protobuf.FieldMask":
            if not isinstance(value, str):
                _invalid_type(v, path, "string", value)
                return
            target.paths.extend(  # type: ignore[attr-defined]
                _camel_to_snake(p.strip()) for p in value.split(",") if p.strip()
            )
            return
        if full in _JSON_WKT:
            try:
                json_format.ParseDict(value, target)
            except json_format.ParseError as exc:
                v.add(path, "invalid_type", str(exc))
            return
        self.decode_object(target, value, path, v)
        target.SetInParent()

    def _single_value_parser(self, fd: AnyField) -> Callable[[Any, str, Violations], Any]:
        """Parser of one JSON value (not a list) for a scalar or enum field."""
        if fd.type == FD.TYPE_MESSAGE:
            cls_desc = fd.message_type

            def parse_msg(value: Any, path: str, v: Violations) -> Any:
                from google.protobuf import message_factory

                target = message_factory.GetMessageClass(cls_desc)()
                self._decode_message(target, value, path, v)
                return target

            return parse_msg
        if fd.type in _INT_TYPES:
            low, high = _INT_TYPES[fd.type]

            def parse_int(value: Any, path: str, v: Violations) -> Any:
                if isinstance(value, bool):
                    _invalid_type(v, path, "number", value)
                    return None
                if isinstance(value, float):
                    if not value.is_integer():
                        _invalid_type(v, path, "integer", value)
                        return None
                    value = int(value)
                elif isinstance(value, str):
                    # Ids may come as proto3-JSON strings; accept both.
                    try:
                        value = int(value.strip())
                    except ValueError:
                        _invalid_type(v, path, "number", value)
                        return None
                elif not isinstance(value, int):
                    _invalid_type(v, path, "number", value)
                    return None
                if value < low:
                    v.add(path, "too_small", f"Number must be greater than or equal to {low}")
                    return None
                if value > high:
                    v.add(path, "too_big", f"Number must be less than or equal to {high}")
                    return None
                return value

            return parse_int
        if fd.type in _FLOAT_TYPES:

            def parse_float(value: Any, path: str, v: Violations) -> Any:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    _invalid_type(v, path, "number", value)
                    return None
                return float(value)

            return parse_float
        if fd.type == FD.TYPE_BOOL:
            return _exact_type(bool, "boolean")
        if fd.type == FD.TYPE_STRING:
            return _exact_type(str, "string")
        if fd.type == FD.TYPE_BYTES:

            def parse_bytes(value: Any, path: str, v: Violations) -> Any:
                if not isinstance(value, str):
                    _invalid_type(v, path, "string", value)
                    return None
                try:
                    return base64.b64decode(
                        value + "=" * (-len(value) % 4),
                        altchars=b"-_" if "-" in value or "_" in value else None,
                        validate=True,
                    )
                except (binascii.Error, ValueError):
                    v.add(path, "invalid_string", "Invalid base64")
                    return None

            return parse_bytes
        if fd.type == FD.TYPE_ENUM:
            by_name = {name: number for number, name in enum_json_names(fd.enum_type).items()}
            by_name.update({val.name: val.number for val in fd.enum_type.values if val.number != 0})
            expected = " | ".join(f"'{n}'" for n in enum_json_names(fd.enum_type).values())

            def parse_enum(value: Any, path: str, v: Violations) -> Any:
                if not isinstance(value, str):
                    _invalid_type(v, path, "string", value)
                    return None
                number = by_name.get(value)
                if number is None:
                    v.add(
                        path,
                        "invalid_enum_value",
                        f"Invalid enum value. Expected {expected}, received '{value}'",
                    )
                return number

            return parse_enum
        raise TypeError(f"unsupported field type {fd.type} for {fd.full_name}")

    # ---- path and query strings -----------------------------------------

    def assign_text(self, msg: Message, field_path: str, values: list[str], param: str, v: Violations) -> None:
        """Sets the field at dotted ``field_path`` (JSON or proto names) from
        query or path text; ``param`` names it in violations."""
        target = msg
        parts = field_path.split(".")
        for i, part in enumerate(parts):
            entry = self.field_table(target.DESCRIPTOR).get(part)
            if entry is None:
                v.add(param, "unrecognized_keys", f"Unrecognized key: '{param}'")
                return
            fd = entry[0]
            last = i == len(parts) - 1
            if not last:
                if fd.type != FD.TYPE_MESSAGE or fd.is_repeated:
                    v.add(param, "unrecognized_keys", f"Unrecognized key: '{param}'")
                    return
                target = getattr(target, fd.name)
                continue
            self._assign_field_text(target, fd, values, param, v)

    def _assign_field_text(self, msg: Message, fd: AnyField, values: list[str], param: str, v: Violations) -> None:
        if fd.type == FD.TYPE_MESSAGE and fd.message_type.full_name not in _WRAPPERS | {
            "google.protobuf.Timestamp",
            "google.protobuf.FieldMask",
        }:
            v.add(param, "unrecognized_keys", f"'{param}' cannot be given in the query string")
            return
        if fd.is_repeated:
            items = [parse_scalar_text(fd, text, f"{param}[{i}]", v, self) for i, text in enumerate(values)]
            getattr(msg, fd.name).extend(x for x in items if x is not None)
            return
        if len(values) > 1:
            v.add(param, "invalid_type", "Expected a single value, received several")
            return
        if fd.type == FD.TYPE_MESSAGE:
            self._decode_message(getattr(msg, fd.name), values[0], param, v)
            return
        parsed = parse_scalar_text(fd, values[0], param, v, self)
        if parsed is not None:
            setattr(msg, fd.name, parsed)


def parse_scalar_text(fd: AnyField, text: str, path: str, v: Violations, codec: JsonCodec | None = None) -> Any:
    """A scalar from its text form (query strings, path segments, map keys)."""
    value: Any = text
    if fd.type == FD.TYPE_BOOL:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0"):
            v.add(path, "invalid_type", f"Expected boolean, received '{text}'")
            return None
        return lowered in ("true", "1")
    if fd.type in _FLOAT_TYPES:
        try:
            value = float(text)
        except ValueError:
            v.add(path, "invalid_type", f"Expected number, received '{text}'")
            return None
        return value
    if fd.type in _INT_TYPES:
        try:
            value = int(text)
        except ValueError:
            v.add(path, "invalid_type", f"Expected number, received '{text}'")
            return None
    parser = (codec or _DEFAULT)._single_value_parser(fd)
    return parser(value, path, v)


_DEFAULT = JsonCodec()
