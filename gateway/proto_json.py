"""A proto field as JSON values, and the ``buf.validate`` annotations on it.

In: field and message descriptors. Out: their ``(buf.validate.field)`` and
``(buf.validate.message)`` annotations (the type-specific part, the CEL
rules, the ``in`` lists), the JSON type and zero value of a field's values
in the JSON mapping, and the JSON Schema of "the message carries the field"
(CEL's ``has()``). The OpenAPI rule modules and the CEL translator share
these.
"""

from __future__ import annotations

from typing import Any

from buf.validate import validate_pb2 as pv
from google.protobuf.descriptor import FieldDescriptor

from core.rpc.jsonmap import AnyDesc, AnyField
from gateway.schema_logic import Schema

FD = FieldDescriptor
INTS = {
    FD.TYPE_INT32,
    FD.TYPE_INT64,
    FD.TYPE_UINT32,
    FD.TYPE_UINT64,
    FD.TYPE_SINT32,
    FD.TYPE_SINT64,
    FD.TYPE_FIXED32,
    FD.TYPE_FIXED64,
    FD.TYPE_SFIXED32,
    FD.TYPE_SFIXED64,
}
_FLOATS = {FD.TYPE_FLOAT, FD.TYPE_DOUBLE}
# The numeric cases of FieldRules' ``type`` oneof.
NUMERIC_RULES = {
    "float",
    "double",
    "int32",
    "int64",
    "uint32",
    "uint64",
    "sint32",
    "sint64",
    "fixed32",
    "fixed64",
    "sfixed32",
    "sfixed64",
}


def field_rules(fd: AnyField) -> Any:
    """The field's ``(buf.validate.field)``, or None."""
    options = fd.GetOptions()
    return options.Extensions[pv.field] if options.HasExtension(pv.field) else None


def message_rules(desc: AnyDesc) -> Any:
    """The message's ``(buf.validate.message)``, or None."""
    options = desc.GetOptions()
    return options.Extensions[pv.message] if options.HasExtension(pv.message) else None


def type_rules(fd: AnyField) -> tuple[str | None, Any]:
    """The case of the field's type-specific rules and those rules
    (``("string", StringRules)``, …), or (None, None)."""
    rules = field_rules(fd)
    kind = rules.WhichOneof("type") if rules is not None else None
    return kind, (getattr(rules, kind) if kind else None)


def listed(rules: Any) -> list[Any]:
    """The ``in`` list of type-specific rules (a Python keyword, hence getattr)."""
    return list(getattr(rules, "in"))


def cel_rules(rules: Any) -> list[tuple[str, str, str]]:
    """(id, message, expression) of each CEL rule in a FieldRules or MessageRules."""
    out = [(r.id, r.message, r.expression) for r in rules.cel]
    out.extend(("", "", e) for e in rules.cel_expression)
    return out


def json_type(fd: AnyField, *, item: bool = False) -> str:
    """The JSON type of one value of ``fd`` (of an item, for ``item``)."""
    if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
        return "object"
    if fd.is_repeated and not item:
        return "array"
    if fd.type in INTS:
        return "integer"
    if fd.type in _FLOATS:
        return "number"
    if fd.type == FD.TYPE_BOOL:
        return "boolean"
    if fd.type == FD.TYPE_MESSAGE:
        wkt = fd.message_type.full_name
        if wkt in ("google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"):
            return "string"
        return "object"
    return "string"


def zero_json(fd: AnyField, *, item: bool = False) -> Any:
    """The JSON of a field's zero value (what the server reads for an absent key)."""
    t = json_type(fd, item=item)
    return {"string": "", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}[t]


def has_schema(fd: AnyField) -> Schema:
    """The message carries field ``fd`` (has() in CEL: set, or not zero without presence)."""
    name = fd.json_name
    if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
        value: Schema = {"type": "object", "minProperties": 1}
    elif fd.is_repeated:
        value = {"type": "array", "minItems": 1}
    elif fd.has_presence or fd.type == FD.TYPE_ENUM:
        value = {"not": {"type": "null"}}
    else:
        value = {"type": json_type(fd), "not": {"const": zero_json(fd)}}
    return {"required": [name], "properties": {name: value}}
