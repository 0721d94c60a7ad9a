"""``buf.validate`` rules as JSON Schema, for the OpenAPI document.

The validator enforces the annotations; this module publishes them. Each
rule becomes the JSON Schema keyword that says the same thing (``min_len`` →
``minLength``, ``int32.in`` → ``enum``, ``repeated.items`` → ``items``, …).
CEL rules (field- or message-level) are translated when they use a small,
common subset of CEL: ``has()``, comparisons of a field with literals (or with
another field whose values form a small set), ``in`` lists, ``startsWith`` and
friends, ``size()``, ``all``/``exists`` over lists, ``! && || ?:``. Whatever
cannot be said in JSON Schema (timestamps relative to now, byte lengths,
arithmetic over open ranges, …) is listed in the description instead, so
readers still see every rule. Every CEL rule is listed there too, by its
message.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from buf.validate import validate_pb2 as pv
from google.protobuf.descriptor import FieldDescriptor

from core.rpc.jsonmap import AnyDesc, AnyField, enum_json_names, snake_to_camel

FD = FieldDescriptor
Schema = dict[str, Any]
_INTS = {
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
_NUMERIC_RULES = {
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
_FORMATS = {
    "email": "email",
    "hostname": "hostname",
    "ipv4": "ipv4",
    "ipv6": "ipv6",
    "uri": "uri",
    "uri_ref": "uri-reference",
    "uuid": "uuid",
}
_WELL_KNOWN_PATTERNS = {
    "tuuid": "^[0-9a-fA-F]{32}$",
    "ulid": "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$",
}
_WELL_KNOWN_NOTES = {
    "ip": "an IP address (v4 or v6)",
    "address": "a hostname or an IP address",
    "ip_with_prefixlen": "an IP address with prefix length",
    "ipv4_with_prefixlen": "an IPv4 address with prefix length",
    "ipv6_with_prefixlen": "an IPv6 address with prefix length",
    "ip_prefix": "an IP prefix",
    "ipv4_prefix": "an IPv4 prefix",
    "ipv6_prefix": "an IPv6 prefix",
    "host_and_port": "host:port",
    "protobuf_fqn": "a fully-qualified protobuf name",
    "protobuf_dot_fqn": "a fully-qualified protobuf name with a leading dot",
}
_HEADER_PATTERNS = {
    (1, True): "^:?[0-9a-zA-Z!#$%&'*+\\-.^_|~`]+$",
    (1, False): "^[^\\u0000\\u000A\\u000D]+$",
    (2, True): "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F]*$",
    (2, False): "^[^\\u0000\\u000A\\u000D]*$",
}
# Constructs of RE2 that ECMA-262 (JSON Schema's dialect) reads differently.
_RE2_ONLY = re.compile(r"\(\?[a-zA-Z]|\\[AzQEpP]|\[\[:|\(\?P<")


def field_rules(fd: AnyField) -> Any:
    """The field's ``(buf.validate.field)``, or None."""
    options = fd.GetOptions()
    return options.Extensions[pv.field] if options.HasExtension(pv.field) else None


def message_rules(desc: AnyDesc) -> Any:
    """The message's ``(buf.validate.message)``, or None."""
    options = desc.GetOptions()
    return options.Extensions[pv.message] if options.HasExtension(pv.message) else None


def json_type(fd: AnyField, *, item: bool = False) -> str:
    """The JSON type of one value of ``fd`` (of an item, for ``item``)."""
    if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
        return "object"
    if fd.is_repeated and not item:
        return "array"
    if fd.type in _INTS:
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


def ecma_pattern(pattern: str) -> str | None:
    """An RE2 pattern that means the same in ECMA-262, or None."""
    return None if _RE2_ONLY.search(pattern) else pattern


def literal_pattern(text: str) -> str:
    """``text`` as a regular expression matching itself (ECMA-safe escapes)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)


@dataclass
class Published:
    """What a field's rules contribute: keywords on its value, and prose."""

    schema: Schema
    notes: list[str] = field(default_factory=list)


def _merge(schema: Schema, extra: Schema) -> Schema:
    """Adds ``extra``'s keywords to ``schema``; clashing ones go into allOf."""
    out = dict(schema)
    for key, value in extra.items():
        if key in out and out[key] != value:
            out.setdefault("allOf", []).append({key: value})
        else:
            out[key] = value
    return out


def _number_bounds(rules: Any, out: Schema, notes: list[str]) -> None:
    low: tuple[str, Any] | None = None
    high: tuple[str, Any] | None = None
    if rules.HasField("gt"):
        low = ("exclusiveMinimum", rules.gt)
    elif rules.HasField("gte"):
        low = ("minimum", rules.gte)
    if rules.HasField("lt"):
        high = ("exclusiveMaximum", rules.lt)
    elif rules.HasField("lte"):
        high = ("maximum", rules.lte)
    if low and high and low[1] > high[1]:
        # protovalidate: a lower bound above the upper one means "outside the range".
        out["anyOf"] = [{high[0]: high[1]}, {low[0]: low[1]}]
        return
    for bound in (low, high):
        if bound is not None:
            out[bound[0]] = bound[1]


def _scalar_rules(kind: str, rules: Any, enum_names: dict[int, str] | None) -> Published:
    out: Schema = {}
    notes: list[str] = []
    if kind == "string":
        patterns: list[str] = []
        if rules.HasField("const"):
            out["const"] = rules.const
        if rules.HasField("len"):
            out["minLength"] = out["maxLength"] = rules.len
        if rules.HasField("min_len"):
            out["minLength"] = rules.min_len
        if rules.HasField("max_len"):
            out["maxLength"] = rules.max_len
        if rules.HasField("len_bytes"):
            notes.append(f"exactly {rules.len_bytes} bytes of UTF-8")
        if rules.HasField("min_bytes"):
            notes.append(f"at least {rules.min_bytes} bytes of UTF-8")
        if rules.HasField("max_bytes"):
            notes.append(f"at most {rules.max_bytes} bytes of UTF-8")
            out["maxLength"] = min(out.get("maxLength", rules.max_bytes), rules.max_bytes)
        if rules.HasField("pattern"):
            ecma = ecma_pattern(rules.pattern)
            if ecma is None:
                notes.append(f"matches the RE2 pattern {rules.pattern}")
            else:
                patterns.append(ecma)
        if rules.HasField("prefix"):
            patterns.append("^" + literal_pattern(rules.prefix))
        if rules.HasField("suffix"):
            patterns.append(literal_pattern(rules.suffix) + "$")
        if rules.HasField("contains"):
            patterns.append(literal_pattern(rules.contains))
        if rules.HasField("not_contains"):
            out["not"] = {"pattern": literal_pattern(rules.not_contains)}
        if getattr(rules, "in"):
            out["enum"] = list(getattr(rules, "in"))
        if rules.not_in:
            out = _merge(out, {"not": {"enum": list(rules.not_in)}})
        known = rules.WhichOneof("well_known")
        if known in _FORMATS:
            out["format"] = _FORMATS[known]
        elif known in _WELL_KNOWN_PATTERNS:
            patterns.append(_WELL_KNOWN_PATTERNS[known])
        elif known == "well_known_regex" and rules.well_known_regex:
            strict = not rules.HasField("strict") or rules.strict
            patterns.append(_HEADER_PATTERNS[(rules.well_known_regex, strict)])
        elif known in _WELL_KNOWN_NOTES:
            notes.append(_WELL_KNOWN_NOTES[known])
        if known and known != "well_known_regex" and known != "uri_ref":
            out.setdefault("minLength", 1)  # every well-known format but uri_ref refuses ""
        if patterns:
            out["pattern"] = patterns[0]
            if len(patterns) > 1:
                out.setdefault("allOf", []).extend({"pattern": p} for p in patterns[1:])
        if rules.example:
            out["examples"] = list(rules.example)
    elif kind in _NUMERIC_RULES:
        if rules.HasField("const"):
            out["const"] = rules.const
        _number_bounds(rules, out, notes)
        if getattr(rules, "in"):
            out["enum"] = list(getattr(rules, "in"))
        if rules.not_in:
            out = _merge(out, {"not": {"enum": list(rules.not_in)}})
        if kind in ("float", "double") and rules.finite:
            notes.append("finite (not NaN or ±Infinity)")
        if rules.example:
            out["examples"] = list(rules.example)
    elif kind == "bool":
        if rules.HasField("const"):
            out["const"] = rules.const
    elif kind == "enum":
        names = dict(enum_names or {})
        allowed = set(names)
        if rules.HasField("const"):
            allowed &= {rules.const}
        if getattr(rules, "in"):
            allowed &= set(getattr(rules, "in"))
        allowed -= set(rules.not_in)
        if allowed != set(names):
            out["enum"] = [names[n] for n in sorted(allowed)]
    elif kind == "bytes":
        for name in ("len", "min_len", "max_len"):
            if rules.HasField(name):
                notes.append(f"{name.replace('_', ' ')} {getattr(rules, name)} bytes (before base64)")
        if rules.HasField("pattern"):
            notes.append(f"bytes match {rules.pattern}")
    elif kind in ("timestamp", "duration"):
        notes.extend(_time_notes(kind, rules))
    elif kind == "field_mask":
        if getattr(rules, "in"):
            # REST spells a mask as comma-separated lowerCamelCase names.
            paths = "|".join(literal_pattern(snake_to_camel(p)) for p in getattr(rules, "in"))
            out["pattern"] = f"^(?:(?:{paths})(?:,(?:{paths}))*)?$"
            notes.append("paths among: " + ", ".join(getattr(rules, "in")))
        if rules.not_in:
            notes.append("paths not among: " + ", ".join(rules.not_in))
    elif kind == "any" and getattr(rules, "in"):
        notes.append("type among: " + ", ".join(getattr(rules, "in")))
    return Published(out, notes)


def _time_text(kind: str, value: Any) -> str:
    if kind == "timestamp":
        from core.rpc.jsonmap import format_timestamp

        return format_timestamp(value.seconds, value.nanos)
    return f"{value.seconds + value.nanos / 1e9:g}s"


def _time_notes(kind: str, rules: Any) -> list[str]:
    notes: list[str] = []
    words = {"lt": "before", "lte": "at or before", "gt": "after", "gte": "at or after", "const": "exactly"}
    if kind == "duration":
        words = {"lt": "less than", "lte": "at most", "gt": "more than", "gte": "at least", "const": "exactly"}
    for name, word in words.items():
        if rules.HasField(name):
            notes.append(f"{word} {_time_text(kind, getattr(rules, name))}")
    if kind == "timestamp":
        if rules.lt_now:
            notes.append("in the past")
        if rules.gt_now:
            notes.append("in the future")
        if rules.HasField("within"):
            notes.append(f"within {_time_text('duration', rules.within)} of now")
    return notes


def _enum_names(fd: AnyField) -> dict[int, str] | None:
    return enum_json_names(fd.enum_type) if fd.type == FD.TYPE_ENUM else None


def value_rules(fd: AnyField, rules: Any, *, item: bool = False) -> Published:
    """Keywords for one value of ``fd`` (an item of it, for ``item``) from its
    type-specific rules and field-level CEL, or nothing when it has none."""
    if rules is None or rules.ignore == pv.IGNORE_ALWAYS:
        return Published({})
    kind = rules.WhichOneof("type")
    published = Published({})
    if kind and kind not in ("repeated", "map"):
        published = _scalar_rules(kind, getattr(rules, kind), _enum_names(fd))
    for _rule_id, message, expression in _cel_rules(rules):
        published.notes.append(rule_text(message, expression))
        translated = translate_rule(expression, CelScope.value(fd, item=item))
        if translated is not None:
            published.schema = _merge(published.schema, translated)
    if rules.ignore == pv.IGNORE_IF_ZERO_VALUE and published.schema:
        published.schema = {"anyOf": [{"const": zero_json(fd, item=item)}, published.schema]}
    return published


def collection_rules(fd: AnyField, rules: Any) -> tuple[Schema, list[str]]:
    """Keywords of a repeated or map field itself (minItems, propertyNames, …)."""
    if rules is None or rules.ignore == pv.IGNORE_ALWAYS:
        return {}, []
    kind = rules.WhichOneof("type")
    out: Schema = {}
    if kind == "repeated":
        r = rules.repeated
        if r.HasField("min_items"):
            out["minItems"] = r.min_items
        if r.HasField("max_items"):
            out["maxItems"] = r.max_items
        if r.unique:
            out["uniqueItems"] = True
    elif kind == "map":
        r = rules.map
        if r.HasField("min_pairs"):
            out["minProperties"] = r.min_pairs
        if r.HasField("max_pairs"):
            out["maxProperties"] = r.max_pairs
    return out, []


def item_rules(fd: AnyField, rules: Any) -> Any:
    """The FieldRules for the items of a repeated field, or None."""
    if rules is not None and rules.WhichOneof("type") == "repeated" and rules.repeated.HasField("items"):
        return rules.repeated.items
    return None


def map_part_rules(rules: Any, part: str) -> Any:
    """The FieldRules for a map's ``keys`` or ``values``, or None."""
    if rules is not None and rules.WhichOneof("type") == "map" and rules.map.HasField(part):
        return getattr(rules.map, part)
    return None


def _cel_rules(rules: Any) -> list[tuple[str, str, str]]:
    """(id, message, expression) of each CEL rule in a FieldRules or MessageRules."""
    out = [(r.id, r.message, r.expression) for r in rules.cel]
    out.extend(("", "", e) for e in rules.cel_expression)
    return out


def is_required(fd: AnyField, rules: Any) -> bool:
    """Whether a request must carry the field: ``required``, or a field without
    presence whose zero value (what an absent key means) breaks its rules."""
    if rules is None:
        return False
    if rules.required:
        return True
    if rules.ignore in (pv.IGNORE_ALWAYS, pv.IGNORE_IF_ZERO_VALUE):
        return False
    kind = rules.WhichOneof("type")
    if kind == "repeated":
        return bool(rules.repeated.min_items > 0)
    if kind == "map":
        return bool(rules.map.min_pairs > 0)
    if fd.is_repeated or fd.has_presence or not kind:
        return False
    return not _zero_passes(kind, getattr(rules, kind))


def nonzero_keywords(fd: AnyField) -> Schema:
    """What ``required`` adds for a field without presence: its zero value
    (an empty string or list, 0, false) counts as missing."""
    if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
        return {"minProperties": 1}
    if fd.is_repeated:
        return {"minItems": 1}
    if fd.has_presence:
        return {}
    t = json_type(fd)
    if t == "string" and fd.type != FD.TYPE_ENUM:
        return {"minLength": 1}
    if t in ("integer", "number"):
        return {"not": {"const": 0}}
    if t == "boolean":
        return {"const": True}
    return {}


def _zero_passes(kind: str, r: Any) -> bool:
    if kind == "string":
        if r.HasField("const") and r.const != "":
            return False
        if any(r.HasField(n) and getattr(r, n) > 0 for n in ("len", "min_len", "len_bytes", "min_bytes")):
            return False
        if r.HasField("pattern") and re.search(r.pattern, "") is None:
            return False
        if any(r.HasField(n) and getattr(r, n) for n in ("prefix", "suffix", "contains")):
            return False
        if getattr(r, "in") and "" not in getattr(r, "in"):
            return False
        if "" in r.not_in:
            return False
        known = r.WhichOneof("well_known")
        if known == "well_known_regex":
            return bool(r.well_known_regex != 1)
        return known in (None, "uri_ref")
    if kind in _NUMERIC_RULES:
        if r.HasField("const") and r.const != 0:
            return False
        if not _within_bounds(r, 0):
            return False
        if getattr(r, "in") and 0 not in getattr(r, "in"):
            return False
        return 0 not in r.not_in
    if kind == "bool":
        return not (r.HasField("const") and r.const)
    if kind == "enum":
        if r.HasField("const") and r.const != 0:
            return False
        if getattr(r, "in") and 0 not in getattr(r, "in"):
            return False
        return 0 not in r.not_in
    if kind == "bytes":
        return not any(r.HasField(n) and getattr(r, n) > 0 for n in ("len", "min_len"))
    return True


def _within_bounds(r: Any, v: float) -> bool:
    """Whether ``v`` meets the gt/gte/lt/lte of numeric rules ``r`` (a lower
    bound above the upper one means outside the range, as in protovalidate)."""
    low = (r.gt, v > r.gt) if r.HasField("gt") else (r.gte, v >= r.gte) if r.HasField("gte") else None
    high = (r.lt, v < r.lt) if r.HasField("lt") else (r.lte, v <= r.lte) if r.HasField("lte") else None
    if low is not None and high is not None and low[0] > high[0]:
        return bool(low[1] or high[1])
    return all(bool(bound[1]) for bound in (low, high) if bound is not None)


def zero_json(fd: AnyField, *, item: bool = False) -> Any:
    """The JSON of a field's zero value (what the server reads for an absent key)."""
    t = json_type(fd, item=item)
    return {"string": "", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}[t]


def rule_text(message: str, expression: str) -> str:
    """What a CEL rule says, for people: its message; else, for a rule that
    returns its message (``cond ? '' : 'Must be …' + …``), the literal text of
    that message; else the expression."""
    if message:
        return message
    try:
        node = _Parser(expression).parse()
    except _UntranslatableError:
        return expression
    while node[0] == "?" and node[2] == ("lit", ""):
        node = node[3]
    parts: list[str] = []

    def walk(n: tuple[Any, ...]) -> None:
        if n[0] == "+":
            walk(n[1])
            walk(n[2])
        elif n[0] == "lit" and isinstance(n[1], str):
            parts.append(n[1])
        else:
            parts.append("…")

    walk(node)
    text = "".join(parts)
    return text if text.strip("… ") and node[0] in ("+", "lit") else expression


def message_notes(desc: AnyDesc, rules: Any) -> list[tuple[str, str]]:
    """(field JSON name or "", text) for each message-level rule, for the description."""
    out: list[tuple[str, str]] = []
    if rules is None:
        return out
    by_json = {fd.json_name: fd for fd in desc.fields}
    for rule_id, message, expression in _cel_rules(rules):
        head = rule_id.split(".", 1)[0]
        fd = desc.fields_by_name.get(head) or by_json.get(head)
        out.append((fd.json_name if fd is not None else "", rule_text(message, expression)))
    for oneof in rules.oneof:
        names = [desc.fields_by_name[f].json_name if f in desc.fields_by_name else f for f in oneof.fields]
        word = "exactly" if oneof.required else "at most"
        out.append(("", f"{word} one of {', '.join(names)}"))
    return out


def message_schemas(desc: AnyDesc, rules: Any, required: frozenset[str] = frozenset()) -> list[Schema]:
    """JSON Schema for the message-level rules that translate (``required``: the
    JSON names the message requires, whose unset values need no case).

    Rules that branch on the same field with few values (a type enum) are
    published as one case per value, each with what the rules require for
    it; other rules take the smaller of their plain form and a case split; two
    rules about the same fields become one when that leaves fewer branches.
    The meaning is the rules' own; the form keeps the expansion small for
    validators and test-data generators."""
    out: list[Schema] = []
    if rules is None:
        return out
    translator = _Translator(CelScope.message(desc))
    parsed: list[tuple[Any, ...]] = []
    for _rule_id, _message, expression in _cel_rules(rules):
        try:
            node = _Parser(expression).parse()
            translator.rule(node)
        except _TRANSLATION_ERRORS:
            continue
        parsed.append(node)

    def finite(ref: tuple[Any, ...]) -> bool:
        return translator.finite_domain(desc.fields_by_name[ref[2]]) is not None

    def is_present(ref: tuple[Any, ...]) -> bool:
        return desc.fields_by_name[ref[2]].json_name in required

    counts: dict[tuple[Any, ...], int] = {}
    for node in parsed:
        for ref in dict.fromkeys(translator.fields_in(node)):
            if finite(ref):
                counts[ref] = counts.get(ref, 0) + 1
    if counts and max(counts.values()) >= 2:
        ref = max(counts, key=lambda r: counts[r])
        split = [n for n in parsed if ref in translator.fields_in(n)]
        parsed = [n for n in parsed if ref not in translator.fields_in(n)]
        try:
            big = translator.cases(ref, split, present=is_present(ref))
        except _TRANSLATION_ERRORS:
            parsed.extend(split)
        else:
            out.append(big)
    rest: list[Schema] = []
    for node in parsed:
        forms = [translator.rule(node)]
        for ref in dict.fromkeys(r for r in translator.fields_in(node) if finite(r)):
            try:
                forms.append(translator.cases(ref, [node], present=is_present(ref)))
            except _TRANSLATION_ERRORS:
                continue
        rest.append(min(forms, key=lambda f: len(json.dumps(f))))
    # The small rules first: jsonschema-rs (schemathesis' generator) models the rules within its
    # budget when the large case split comes last, and gives up when it comes first.
    out[:0] = _merge_overlapping(rest)
    for oneof in rules.oneof:
        fds = [desc.fields_by_name[f] for f in oneof.fields if f in desc.fields_by_name]
        sets = [_has(fd) for fd in fds]
        pairs = [{"allOf": [sets[i], sets[j]]} for i in range(len(sets)) for j in range(i + 1, len(sets))]
        if pairs:
            out.append({"not": {"anyOf": pairs}})
        if oneof.required and sets:
            out.append({"anyOf": sets})
    return out


def _branches(schema: Schema) -> list[Schema]:
    return list(schema["anyOf"]) if list(schema) == ["anyOf"] else [schema]


def _names(schema: Any) -> set[str]:
    """Property names a schema mentions anywhere."""
    if isinstance(schema, dict):
        found = set(schema.get("properties", {})) | set(schema.get("required", []))
        return found.union(*(_names(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_names(v) for v in schema))
    return set()


def _merge_overlapping(rules: list[Schema]) -> list[Schema]:
    """Two rules about the same properties as one, when their combined branches
    (contradictions dropped) are fewer than both rules' branches together."""
    rules = list(rules)
    merged = True
    while merged:
        merged = False
        for i, j in itertools.combinations(range(len(rules)), 2):
            a, b = _branches(rules[i]), _branches(rules[j])
            if len(a) < 2 or len(b) < 2 or not _names(rules[i]) & _names(rules[j]):
                continue
            product = [x for x in (_all_of([p, q]) for p in a for q in b) if x != _FALSE]
            if len(product) < len(a) + len(b):
                rules[i] = _any_of(product)
                del rules[j]
                merged = True
                break
    return rules


def oneof_schemas(desc: AnyDesc) -> tuple[list[Schema], list[str]]:
    """``(buf.validate.oneof).required`` on the message's real oneofs."""
    schemas: list[Schema] = []
    notes: list[str] = []
    for oneof in desc.oneofs:
        fds = list(oneof.fields)
        if len(fds) == 1 and oneof.name == "_" + fds[0].name:
            continue  # proto3 optional
        names = [fd.json_name for fd in fds]
        sets = [_has(fd) for fd in fds]
        pairs = [{"allOf": [sets[i], sets[j]]} for i in range(len(sets)) for j in range(i + 1, len(sets))]
        if pairs:
            schemas.append({"not": {"anyOf": pairs}})
        options = oneof.GetOptions()
        if options.HasExtension(pv.oneof) and options.Extensions[pv.oneof].required:
            schemas.append({"anyOf": sets})
            notes.append(f"exactly one of {', '.join(names)}")
        else:
            notes.append(f"at most one of {', '.join(names)}")
    return schemas, notes


# ---- CEL → JSON Schema ------------------------------------------------------


class _UntranslatableError(Exception):
    pass


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+\.\d+(?:[eE][+-]?\d+)?|0x[0-9a-fA-F]+u?|\d+u?)
    | (?P<str>[rR]?'(?:\\.|[^'\\])*'|[rR]?"(?:\\.|[^"\\])*")
    | (?P<op>\|\||&&|==|!=|<=|>=|[-+*/%<>!?:.,()\[\]])
    | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _UntranslatableError(text[pos:])
        pos = m.end()
        if m.group("num"):
            raw = m.group("num").rstrip("u")
            out.append(("lit", float(raw) if "." in raw else int(raw, 0)))
        elif m.group("str"):
            raw = m.group("str")
            if raw[0] in "rR":
                out.append(("lit", raw[2:-1]))
            else:
                out.append(("lit", _unescape(raw[1:-1])))
        elif m.group("op"):
            out.append(("op", m.group("op")))
        else:
            word = m.group("id")
            if word in ("true", "false"):
                out.append(("lit", word == "true"))
            elif word == "null":
                out.append(("lit", None))
            elif word == "in":
                out.append(("op", "in"))
            else:
                out.append(("id", word))
    return out


def _unescape(text: str) -> str:
    simple = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?"}

    def repl(m: re.Match[str]) -> str:
        body = m.group(1)
        if body[0] in simple:
            return simple[body[0]] + body[1:]
        if body[0] in "uUx":
            return chr(int(body[1:], 16))
        raise _UntranslatableError(body)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|.)", repl, text)


class _Parser:
    """Recursive descent over the CEL grammar; nodes are tuples."""

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, op: str | None = None) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None or (op is not None and tok != ("op", op)):
            raise _UntranslatableError(f"expected {op}")
        self.i += 1
        return tok

    def at(self, op: str) -> bool:
        return self.peek() == ("op", op)

    def parse(self) -> tuple[Any, ...]:
        node = self.expr()
        if self.peek() is not None:
            raise _UntranslatableError("trailing input")
        return node

    def expr(self) -> tuple[Any, ...]:
        cond = self.binary(0)
        if self.at("?"):
            self.take("?")
            then = self.expr()
            self.take(":")
            return ("?", cond, then, self.expr())
        return cond

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("||",),
        ("&&",),
        ("==", "!=", "<", "<=", ">", ">=", "in"),
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> tuple[Any, ...]:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in self._LEVELS[level]:
            self.take()
            node = (tok[1], node, self.binary(level + 1))
        return node

    def unary(self) -> tuple[Any, ...]:
        if self.at("!"):
            self.take("!")
            return ("!", self.unary())
        if self.at("-"):
            self.take("-")
            return ("neg", self.unary())
        return self.member()

    def member(self) -> tuple[Any, ...]:
        node = self.primary()
        while True:
            if self.at("."):
                self.take(".")
                kind, name = self.take()
                if kind != "id":
                    raise _UntranslatableError("member")
                node = ("call", name, node, self.args(")")) if self.at("(") else ("get", node, name)
            elif self.at("["):
                self.take("[")
                index = self.expr()
                self.take("]")
                node = ("index", node, index)
            else:
                return node

    def args(self, close: str) -> list[tuple[Any, ...]]:
        self.take("(" if close == ")" else "[")
        out: list[tuple[Any, ...]] = []
        while not self.at(close):
            out.append(self.expr())
            if not self.at(close):
                self.take(",")
        self.take(close)
        return out

    def primary(self) -> tuple[Any, ...]:
        tok = self.peek()
        if tok is None:
            raise _UntranslatableError("end of input")
        if tok == ("op", "("):
            self.take("(")
            node = self.expr()
            self.take(")")
            return node
        if tok == ("op", "["):
            return ("list", self.args("]"))
        kind, value = self.take()
        if kind == "lit":
            return ("lit", value)
        if kind == "id":
            if self.at("("):
                return ("call", value, None, self.args(")"))
            return ("id", value)
        raise _UntranslatableError(str(value))


@dataclass
class CelScope:
    """What ``this`` is: a message (its fields by name) or one field's value."""

    desc: AnyDesc = None
    fd: AnyField = None
    item: bool = False
    variables: dict[str, tuple[AnyField, bool]] = field(default_factory=dict)

    @classmethod
    def message(cls, desc: AnyDesc) -> CelScope:
        return cls(desc=desc)

    @classmethod
    def value(cls, fd: AnyField, *, item: bool = False) -> CelScope:
        return cls(fd=fd, item=item)


# A subject: where a value comes from. ("field", fd) is a field of the message
# in scope (may be absent); ("value", fd, item) is the value in scope itself.
Subject = tuple[Any, ...]


_TRANSLATION_ERRORS = (_UntranslatableError, KeyError, TypeError, ValueError, RecursionError, re.error)


def translate_rule(expression: str, scope: CelScope) -> Schema | None:
    """The JSON Schema of a CEL rule (bool, or string that is "" when valid),
    or None when the expression is outside the subset."""
    try:
        return _Translator(scope).rule(_Parser(expression).parse())
    except _TRANSLATION_ERRORS:
        return None


_TRUE: Schema = {}
_FALSE: Schema = {"not": {}}


def _has(fd: AnyField) -> Schema:
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


def _any_of(items: list[Schema]) -> Schema:
    flat: list[Schema] = []
    for item in items:
        if item == _TRUE:
            return _TRUE
        if item == _FALSE:
            continue
        for x in item["anyOf"] if list(item) == ["anyOf"] else [item]:
            if x not in flat:
                flat.append(x)
    # String patterns, any of which may match, are one pattern.
    if len(flat) > 1 and all(set(x) == {"type", "pattern"} and x["type"] == "string" for x in flat):
        return {"type": "string", "pattern": "|".join(f"(?:{x['pattern']})" for x in flat)}
    # Branches that each constrain the same one property become one constraint on it:
    # {"properties": {n: anyOf[...]}}, required when no branch allows n to be absent.
    by_name: dict[str, list[Schema]] = {}
    for item in flat:
        name = _single_property(item)
        if name is not None:
            by_name.setdefault(name, []).append(item)
    for name, branches in by_name.items():
        if len(branches) < 2:
            continue
        union: Schema = {"properties": {name: _any_of([b["properties"][name] for b in branches])}}
        if all(b.get("required") == [name] for b in branches):
            union = {"required": [name], **union}
        first = flat.index(branches[0])
        flat = [x for x in flat if not any(x is b for b in branches)]
        flat.insert(min(first, len(flat)), union)
    if not flat:
        return _FALSE
    return flat[0] if len(flat) == 1 else {"anyOf": flat}


def accepts_null(schema: Any) -> bool:
    """Whether JSON null meets ``schema`` (keywords for other types let it through)."""
    if schema is True or schema == {}:
        return True
    if schema is False:
        return False
    kinds = schema.get("type")
    if kinds is not None and "null" not in (kinds if isinstance(kinds, list) else [kinds]):
        return False
    if "const" in schema and schema["const"] is not None:
        return False
    if "enum" in schema and None not in schema["enum"]:
        return False
    if "$ref" in schema:
        return False
    if "not" in schema and accepts_null(schema["not"]):
        return False
    if "allOf" in schema and not all(accepts_null(x) for x in schema["allOf"]):
        return False
    return not any(k in schema and not any(accepts_null(x) for x in schema[k]) for k in ("anyOf", "oneOf"))


def _single_property(item: Schema) -> str | None:
    """The one property a {"required"?, "properties"} schema constrains, if it is one."""
    props = item.get("properties")
    if not set(item) <= {"required", "properties"} or not isinstance(props, dict) or len(props) != 1:
        return None
    name = next(iter(props))
    return name if item.get("required", [name]) == [name] else None


def _all_of(items: list[Schema]) -> Schema:
    flat: list[Schema] = []
    for item in items:
        if item == _FALSE:
            return _FALSE
        if item == _TRUE:
            continue
        flat.extend(item["allOf"] if list(item) == ["allOf"] else [item])
    # Constraints on properties become one object schema: {"required": [...], "properties": {...}}.
    merged: Schema = {}
    rest: list[Schema] = []
    for item in flat:
        if not set(item) <= {"required", "properties"}:
            rest.append(item)
            continue
        for name in item.get("required", []):
            merged.setdefault("required", [])
            if name not in merged["required"]:
                merged["required"].append(name)
        for name, prop in item.get("properties", {}).items():
            props = merged.setdefault("properties", {})
            props[name] = _all_of([props[name], prop]) if name in props else prop
    for name, prop in merged.get("properties", {}).items():
        if prop == _FALSE and name in merged.get("required", []):
            return _FALSE  # a required property that no value satisfies
    flat = ([merged] if merged else []) + rest
    for x in flat:
        if _not(x) in flat:
            return _FALSE
    if not flat:
        return _TRUE
    return flat[0] if len(flat) == 1 else {"allOf": flat}


def _not(item: Schema) -> Schema:
    if item == _TRUE:
        return _FALSE
    if item == _FALSE:
        return _TRUE
    if list(item) == ["not"]:
        return dict(item["not"])
    props = item.get("properties", {})
    if set(item) <= {"required", "properties"} and len(props) == 1:
        (name, prop), required = next(iter(props.items())), item.get("required", [])
        if required == [name]:
            # not (present and P) = absent, or present and not P: one property constraint, no disjunction
            return {"properties": {name: _not(prop)}}
        if not required:
            return {"required": [name], "properties": {name: _not(prop)}}
    if item == {"not": {"type": "null"}}:
        return {"type": "null"}
    if item in ({"type": "array", "minItems": 1}, {"type": "object", "minProperties": 1}):
        return {"maxItems": 0} if item["type"] == "array" else {"maxProperties": 0}  # null, or empty
    if set(item) == {"type", "not"} and set(item["not"]) == {"const"}:
        return {"enum": [None, item["not"]["const"]]}  # has() on a field without presence, negated
    return {"not": item}


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def _flip_args(compare: Callable[[Any, Any], bool], literal: Any, value: Any) -> bool:
    return compare(value, literal)


_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_BOUND = {"<": "exclusiveMaximum", "<=": "maximum", ">": "exclusiveMinimum", ">=": "minimum"}


class _Translator:
    def __init__(self, scope: CelScope) -> None:
        self.scope = scope

    # -- rules and booleans

    def rule(self, node: tuple[Any, ...]) -> Schema:
        """A top-level rule: a bool, or a string that is empty when valid."""
        if node[0] == "?":
            cond = self.boolean(node[1])
            return _any_of([_all_of([cond, self.rule(node[2])]), _all_of([_not(cond), self.rule(node[3])])])
        if self._is_string(node):
            return _TRUE if self._empty_string(node) else _FALSE
        return self.boolean(node)

    def _is_string(self, node: tuple[Any, ...]) -> bool:
        if node[0] == "lit":
            return isinstance(node[1], str)
        if node[0] == "+":
            return self._is_string(node[1]) or self._is_string(node[2])
        return bool(node[0] == "call" and node[1] == "string")

    def _empty_string(self, node: tuple[Any, ...]) -> bool:
        if node[0] == "lit":
            return bool(node[1] == "")
        if self._known_nonempty(node):
            return False
        raise _UntranslatableError("string of unknown length")

    def _known_nonempty(self, node: tuple[Any, ...]) -> bool:
        if node[0] == "lit":
            return bool(node[1] != "")
        return bool(node[0] == "+" and (self._known_nonempty(node[1]) or self._known_nonempty(node[2])))

    def boolean(self, node: tuple[Any, ...]) -> Schema:
        op = node[0]
        if op == "cmp":
            return self.compare(node[1], node[2], node[3])
        if op == "||":
            return _any_of([self.boolean(node[1]), self.boolean(node[2])])
        if op == "&&":
            return _all_of([self.boolean(node[1]), self.boolean(node[2])])
        if op == "!":
            return _not(self.boolean(node[1]))
        if op == "?":
            cond = self.boolean(node[1])
            return _any_of([_all_of([cond, self.boolean(node[2])]), _all_of([_not(cond), self.boolean(node[3])])])
        if op == "lit" and isinstance(node[1], bool):
            return _TRUE if node[1] else _FALSE
        if op in _COMPARE:
            return self.compare(op, node[1], node[2])
        if op == "in":
            return self.membership(node[1], node[2])
        if op == "call":
            return self.call(node)
        raise _UntranslatableError(op)

    # -- terms

    def subject(self, node: tuple[Any, ...]) -> Subject | None:
        """The field a term reads, or None when it is not a plain field read."""
        if node[0] == "id" and node[1] == "this" and self.scope.fd is not None:
            return ("value", self.scope.fd, self.scope.item)
        if node[0] == "id" and node[1] in self.scope.variables:
            fd, item = self.scope.variables[node[1]]
            return ("value", fd, item)
        if node[0] == "get" and node[1] == ("id", "this") and self.scope.desc is not None:
            return ("field", self.scope.desc.fields_by_name[node[2]])
        return None

    def constant(self, node: tuple[Any, ...]) -> Any:
        """The value of a term made of literals only, else _UntranslatableError."""
        op = node[0]
        if op == "lit":
            return node[1]
        if op == "list":
            return [self.constant(n) for n in node[1]]
        if op == "neg":
            return -self.constant(node[1])
        if op in ("+", "-", "*", "/", "%"):
            a, b = self.constant(node[1]), self.constant(node[2])
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                return a // b if isinstance(a, int) and isinstance(b, int) else a / b
            return math.fmod(a, b)
        raise _UntranslatableError("not a constant")

    def finite_domain(self, fd: AnyField) -> list[Any] | None:
        """The values a field can read as (its zero first), when few: enums,
        bools, and fields whose rules list their values."""
        if fd.is_repeated:
            return None
        if fd.type == FD.TYPE_ENUM:
            return [0, *(v.number for v in fd.enum_type.values if v.number != 0)]
        if fd.type == FD.TYPE_BOOL:
            return [False, True]
        rules = field_rules(fd)
        kind = rules.WhichOneof("type") if rules is not None else None
        if kind and kind in _NUMERIC_RULES | {"string"}:
            listed = list(getattr(getattr(rules, kind), "in"))
            if listed and len(listed) <= 32:
                return [zero_json(fd), *(v for v in listed if v != zero_json(fd))]
        return None

    def _present_values(self, fd: AnyField) -> list[Any] | None:
        """The values a present field may carry under its own rules, when few."""
        domain = self.finite_domain(fd)
        if domain is None:
            return None
        if fd.type == FD.TYPE_ENUM:
            return domain[1:]  # JSON has no name for the zero value
        rules = field_rules(fd)
        kind = rules.WhichOneof("type") if rules is not None else None
        if kind and kind != "bool" and getattr(getattr(rules, kind), "in"):
            return domain[1:] if zero_json(fd) not in getattr(getattr(rules, kind), "in") else domain
        return domain

    def _bounds(self, fd: AnyField) -> tuple[float, float] | None:
        """The closed range a present numeric field's own rules allow."""
        rules = field_rules(fd)
        kind = rules.WhichOneof("type") if rules is not None else None
        if fd.is_repeated or kind not in _NUMERIC_RULES:
            return None
        r = getattr(rules, kind)
        step = 1 if fd.type in _INTS else 0
        low = r.gt + step if r.HasField("gt") else r.gte if r.HasField("gte") else -math.inf
        high = r.lt - step if r.HasField("lt") else r.lte if r.HasField("lte") else math.inf
        return (low, high) if low <= high else None

    def fields_in(self, node: Any) -> list[tuple[Any, ...]]:
        """The ``this.<field>`` reads in a node, in order."""
        if isinstance(node, tuple) and node and node[0] == "get" and node[1] == ("id", "this"):
            return [node]
        if isinstance(node, (tuple, list)):
            return [f for n in node for f in self.fields_in(n)]
        return []

    def _substitute(self, node: Any, target: tuple[Any, ...], value: Any) -> Any:
        if node == target:
            return ("lit", value)
        if node == ("call", "has", None, [target]):
            return ("lit", value != self.finite_domain(self.scope.desc.fields_by_name[target[2]])[0])  # type: ignore[index]
        if isinstance(node, tuple):
            return tuple(self._substitute(n, target, value) for n in node)
        if isinstance(node, list):
            return [self._substitute(n, target, value) for n in node]
        return node

    def cases(self, ref: tuple[Any, ...], rules: list[tuple[Any, ...]], *, present: bool = False) -> Schema:
        """``rules`` (all reading field ``ref``) as one case per value of that field;
        values with the same requirements share a case. ``present``: the field is
        required, so its unset value needs no case."""
        fd = self.scope.desc.fields_by_name[ref[2]]
        domain = self.finite_domain(fd) or []
        groups: dict[str, tuple[list[Any], Schema]] = {}
        excluded = False
        for value in domain[1:] if present else domain:
            body = _all_of([self.rule(self._substitute(n, ref, value)) for n in rules])
            if body == _FALSE:
                excluded = True
                continue
            key = json.dumps(body, sort_keys=True)
            groups.setdefault(key, ([], body))[0].append(value)
        if not present and not excluded and len(groups) == 2 and "{}" in groups:
            # Every value either meets the rules or meets X: "field in those values, or X".
            other = next(body for key, (_, body) in groups.items() if key != "{}")
            return _any_of([self.membership(ref, ("list", [("lit", v) for v in groups["{}"][0]])), other])
        return _any_of(
            [
                _all_of([self.membership(ref, ("list", [("lit", v) for v in values])), body])
                for values, body in groups.values()
            ]
        )

    def compare(self, op: str, left: tuple[Any, ...], right: tuple[Any, ...]) -> Schema:
        for a, b, o in ((left, right, op), (right, left, _FLIP[op])):
            subject = self.subject(a)
            if subject is not None:
                try:
                    value = self.constant(b)
                except _UntranslatableError:
                    continue
                test = functools.partial(_flip_args, _COMPARE[o], value)
                return self.atom(subject, test, self._value_schema(subject, o, value))
            size = self._size_subject(a)
            if size is not None:
                try:
                    value = self.constant(b)
                except _UntranslatableError:
                    continue
                return self.size_atom(size, o, value)
            multiple = self._multiple_of(a, b, o)
            if multiple is not None:
                return multiple
        try:
            return _TRUE if _COMPARE[op](self.constant(left), self.constant(right)) else _FALSE
        except _UntranslatableError:
            pass
        return self._expand(("cmp", op, left, right))

    def _multiple_of(self, left: tuple[Any, ...], right: tuple[Any, ...], op: str) -> Schema | None:
        """``x % n == 0`` (or ``!=``) on an integer field: multipleOf."""
        if left[0] != "%" or op not in ("==", "!="):
            return None
        subject = self.subject(left[1])
        try:
            n, rest = self.constant(left[2]), self.constant(right)
        except _UntranslatableError:
            return None
        if subject is None or rest != 0 or not isinstance(n, int) or n <= 0:
            return None
        fd = subject[1]
        if json_type(fd, item=subject[2] if subject[0] == "value" else False) != "integer":
            return None
        present: Schema = {"type": "integer", "multipleOf": n}
        if op == "!=":
            present = {"type": "integer", "not": {"multipleOf": n}}
        return self.atom(subject, lambda v: (v % n == 0) == (op == "=="), present)

    def _expand(self, node: tuple[Any, ...]) -> Schema:
        """A comparison of two fields: one case per value of a field with few values."""
        for ref in self.fields_in(node):
            if self.finite_domain(self.scope.desc.fields_by_name[ref[2]]) is not None:
                return self.cases(ref, [node])
        raise _UntranslatableError("comparison of fields")

    def membership(self, left: tuple[Any, ...], right: tuple[Any, ...]) -> Schema:
        try:
            return _TRUE if self.constant(left) in self.constant(right) else _FALSE
        except _UntranslatableError:
            pass
        subject = self.subject(left)
        if subject is not None:
            values = self.constant(right)
            if not isinstance(values, list):
                raise _UntranslatableError("in")
            return self.atom(subject, lambda v: v in values, self._value_schema(subject, "in", values))
        collection = self.subject(right)
        if collection is not None:
            value = self.constant(left)
            fd = collection[1]
            item = {"const": self._json_value(fd, value)}
            if collection[0] == "field":
                return {"required": [fd.json_name], "properties": {fd.json_name: {"type": "array", "contains": item}}}
            return {"contains": item}
        raise _UntranslatableError("in")

    def _size_subject(self, node: tuple[Any, ...]) -> Subject | None:
        if node[0] == "call" and node[1] == "size":
            target = node[2] if node[2] is not None else (node[3][0] if len(node[3]) == 1 else None)
            if target is not None and (node[2] is None or not node[3]):
                return self.subject(target)
        return None

    def size_atom(self, subject: Subject, op: str, n: Any) -> Schema:
        fd = subject[1]
        item = subject[2] if subject[0] == "value" else False
        t = json_type(fd, item=item)
        names = {
            "string": ("minLength", "maxLength"),
            "array": ("minItems", "maxItems"),
            "object": ("minProperties", "maxProperties"),
        }
        if t not in names:
            raise _UntranslatableError("size")
        low, high = names[t]
        n = int(n)
        bounds = {
            "==": {low: n, high: n},
            "<": {high: n - 1},
            "<=": {high: n},
            ">": {low: n + 1},
            ">=": {low: n},
        }
        if op == "!=":
            schema: Schema = {"type": t, "not": {low: n, high: n}}
        else:
            schema = {"type": t, **bounds[op]}
        return self.atom(subject, lambda v: _COMPARE[op](0, n) if v == zero_json(fd, item=item) else None, schema)

    def call(self, node: tuple[Any, ...]) -> Schema:
        _, name, target, args = node
        if name == "has" and target is None and len(args) == 1:
            subject = self.subject(args[0])
            if subject is None or subject[0] != "field":
                raise _UntranslatableError("has")
            return _has(subject[1])
        subject = self.subject(target) if target is not None else None
        if subject is None:
            raise _UntranslatableError(name)
        fd = subject[1]
        if name in ("all", "exists", "exists_one") and len(args) == 2 and args[0][0] == "id":
            inner = _Translator(
                CelScope(
                    desc=self.scope.desc,
                    fd=self.scope.fd,
                    item=self.scope.item,
                    variables={**self.scope.variables, args[0][1]: (fd, True)},
                )
            ).boolean(args[1])
            if name == "all":
                value: Schema = {"type": "array", "items": inner}
                return self.atom(subject, lambda v: True if v == [] else None, value)
            counted: Schema = {"type": "array", "contains": inner}
            if name == "exists_one":
                counted.update(minContains=1, maxContains=1)
            return self.atom(subject, lambda v: False if v == [] else None, counted)
        if name in ("startsWith", "endsWith", "contains", "matches") and len(args) == 1:
            text = self.constant(args[0])
            if not isinstance(text, str):
                raise _UntranslatableError(name)
            if name == "matches":
                pattern = ecma_pattern(text)
                if pattern is None:
                    raise _UntranslatableError("RE2-only pattern")
                test: Callable[[Any], Any] = lambda v: re.search(text, v) is not None  # noqa: E731
            else:
                pattern = {
                    "startsWith": "^" + literal_pattern(text),
                    "endsWith": literal_pattern(text) + "$",
                    "contains": literal_pattern(text),
                }[name]
                test = {
                    "startsWith": lambda v: v.startswith(text),
                    "endsWith": lambda v: v.endswith(text),
                    "contains": lambda v: text in v,
                }[name]
            return self.atom(subject, test, {"type": "string", "pattern": pattern})
        formats = {"isEmail": "email", "isHostname": "hostname", "isUri": "uri", "isUriRef": "uri-reference"}
        if name in formats and not args:
            schema = {"type": "string", "format": formats[name]}
            return self.atom(subject, lambda v: v == "" and name == "isUriRef", schema)
        if name == "isIp" and len(args) <= 1:
            version = self.constant(args[0]) if args else 0
            fmt = {4: ["ipv4"], 6: ["ipv6"], 0: ["ipv4", "ipv6"]}[version]
            schema = _any_of([{"format": f} for f in fmt])
            return self.atom(subject, lambda v: False, {"type": "string", **schema})
        raise _UntranslatableError(name)

    # -- atoms

    def _json_value(self, fd: AnyField, value: Any) -> Any:
        """A CEL literal as the field's JSON (enum numbers → names)."""
        if fd.type == FD.TYPE_ENUM:
            if not isinstance(value, int):
                raise _UntranslatableError("enum literal")
            names = enum_json_names(fd.enum_type)
            return names.get(value)
        return value

    def _value_schema(self, subject: Subject, op: str, value: Any) -> Schema:
        """Keywords that hold for a present (non-null) value when ``value op literal``."""
        fd = subject[1]
        item = subject[2] if subject[0] == "value" else False
        t = json_type(fd, item=item)
        if fd.type == FD.TYPE_ENUM:
            numbers = [v.number for v in fd.enum_type.values if v.number != 0]
            if op == "in":
                allowed = [n for n in numbers if n in value]
            elif op in ("==", "!="):
                allowed = [n for n in numbers if _COMPARE[op](n, value)]
            else:
                raise _UntranslatableError("enum order")
            names = enum_json_names(fd.enum_type)
            return {"type": "string", "enum": [names[n] for n in allowed]} if allowed else _FALSE
        if op == "in":
            return {"type": t, "enum": [self._json_value(fd, v) for v in value]}
        if op == "==":
            return {"type": t, "const": value}
        if op == "!=":
            return {"type": t, "not": {"const": value}}
        if t not in ("integer", "number"):
            raise _UntranslatableError("order on non-numbers")
        return {"type": t, _BOUND[op]: value}

    def atom(self, subject: Subject, test: Callable[[Any], Any], present: Schema) -> Schema:
        """``present`` for the subject's value; an absent field reads as its zero value.
        A test that the field's own rules already decide becomes true or false."""
        if subject[0] == "value":
            return present
        fd = subject[1]
        values = self._present_values(fd)
        outcomes: list[Any] = []
        if values is not None:
            outcomes = [test(v) for v in values]
        elif (bounds := self._bounds(fd)) is not None and all(math.isfinite(b) for b in bounds):
            outcomes = [test(bounds[0]), test(bounds[1])] if _monotone(present) else []
        if outcomes and None not in outcomes:
            if all(outcomes):
                present = {"not": {"type": "null"}}
            elif not any(outcomes):
                present = _FALSE
        zero = zero_json(fd)
        if fd.type == FD.TYPE_ENUM and not fd.is_repeated:
            zero_ok = bool(test(0))
        else:
            outcome = test(zero)
            if outcome is None:
                raise _UntranslatableError("zero value")
            zero_ok = bool(outcome)
        name = fd.json_name
        if present == _FALSE and not zero_ok:
            return _FALSE
        if zero_ok:
            if present == {"not": {"type": "null"}}:
                return _TRUE
            return {"properties": {name: _any_of([{"type": "null"}, present])}}
        return {"required": [name], "properties": {name: present}}


def _monotone(schema: Schema) -> bool:
    """A bound test (x < n, x >= n, …): true at both ends of a range means true in between."""
    return any(k in schema for k in _BOUND.values())
