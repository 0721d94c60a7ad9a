"""``buf.validate`` rules as JSON Schema, for the OpenAPI document.

The validator enforces the annotations; this module publishes them. In: a
field's ``(buf.validate.field)`` or a message's ``(buf.validate.message)``
and the descriptor they sit on. Out: the JSON Schema keywords that say the
same thing (``min_len`` → ``minLength``, ``int32.in`` → ``enum``,
``repeated.items`` → ``items``, …), with prose notes for what JSON Schema
cannot say (timestamps relative to now, byte lengths, …), so readers still
see every rule; whether a request must carry a field (``required``, or a zero
value that breaks its rules) and what that adds for a field without
presence; and the message-level rules and oneofs as schemas over the
message's properties. CEL rules (field- or message-level) are translated by
gateway/cel_schema.py when they use its subset, and every CEL rule is
listed in the notes too, by its message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from buf.validate import validate_pb2 as pv

from core.rpc.jsonmap import AnyDesc, AnyField, enum_json_names, format_timestamp, snake_to_camel
from gateway.cel_schema import TRANSLATION_ERRORS, CelScope, Translator, translate_rule
from gateway.cel_syntax import Node, parse, rule_text
from gateway.proto_json import FD, NUMERIC_RULES, cel_rules, has_schema, json_type, listed, zero_json
from gateway.schema_logic import Schema, at_most_one, ecma_pattern, literal_pattern, merge_overlapping

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

_COLLECTION_KEYWORDS = {
    "repeated": {"min_items": "minItems", "max_items": "maxItems"},
    "map": {"min_pairs": "minProperties", "max_pairs": "maxProperties"},
}


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


def _number_bounds(rules: Any, out: Schema) -> None:
    """gt/gte/lt/lte of numeric rules as bounds on ``out``."""
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


def _value_sets(rules: Any, out: Schema) -> Schema:
    """``out`` with the ``in`` and ``not_in`` of string or numeric rules."""
    if listed(rules):
        out["enum"] = listed(rules)
    if rules.not_in:
        out = _merge(out, {"not": {"enum": list(rules.not_in)}})
    return out


def _scalar_rules(kind: str, rules: Any, enum_names: dict[int, str] | None) -> Published:
    """What the type-specific ``rules`` (case ``kind`` of FieldRules' type) say about a value."""
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
        out = _value_sets(rules, out)
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
    elif kind in NUMERIC_RULES:
        if rules.HasField("const"):
            out["const"] = rules.const
        _number_bounds(rules, out)
        out = _value_sets(rules, out)
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
        if listed(rules):
            allowed &= set(listed(rules))
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
        if listed(rules):
            # REST spells a mask as comma-separated lowerCamelCase names.
            paths = "|".join(literal_pattern(snake_to_camel(p)) for p in listed(rules))
            out["pattern"] = f"^(?:(?:{paths})(?:,(?:{paths}))*)?$"
            notes.append("paths among: " + ", ".join(listed(rules)))
        if rules.not_in:
            notes.append("paths not among: " + ", ".join(rules.not_in))
    elif kind == "any" and listed(rules):
        notes.append("type among: " + ", ".join(listed(rules)))
    return Published(out, notes)


def _time_text(kind: str, value: Any) -> str:
    if kind == "timestamp":
        return format_timestamp(value.seconds, value.nanos)
    return f"{value.seconds + value.nanos / 1e9:g}s"


def _time_notes(kind: str, rules: Any) -> list[str]:
    notes: list[str] = []
    if kind == "duration":
        words = {"lt": "less than", "lte": "at most", "gt": "more than", "gte": "at least", "const": "exactly"}
    else:
        words = {"lt": "before", "lte": "at or before", "gt": "after", "gte": "at or after", "const": "exactly"}
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


def value_rules(fd: AnyField, rules: Any, *, item: bool = False) -> Published:
    """Keywords for one value of ``fd`` (an item of it, for ``item``) from its
    type-specific rules and field-level CEL, or nothing when it has none."""
    if rules is None or rules.ignore == pv.IGNORE_ALWAYS:
        return Published({})
    kind = rules.WhichOneof("type")
    published = Published({})
    if kind and kind not in ("repeated", "map"):
        enum_names = enum_json_names(fd.enum_type) if fd.type == FD.TYPE_ENUM else None
        published = _scalar_rules(kind, getattr(rules, kind), enum_names)
    for _, message, expression in cel_rules(rules):
        published.notes.append(rule_text(message, expression))
        translated = translate_rule(expression, CelScope.value(fd, item=item))
        if translated is not None:
            published.schema = _merge(published.schema, translated)
    if rules.ignore == pv.IGNORE_IF_ZERO_VALUE and published.schema:
        published.schema = {"anyOf": [{"const": zero_json(fd, item=item)}, published.schema]}
    return published


def collection_rules(fd: AnyField, rules: Any) -> tuple[Schema, list[str]]:
    """Keywords of a repeated or map field itself (minItems, uniqueItems, maxProperties, …)."""
    if rules is None or rules.ignore == pv.IGNORE_ALWAYS:
        return {}, []
    kind = rules.WhichOneof("type")
    out: Schema = {}
    if kind in _COLLECTION_KEYWORDS:
        r = getattr(rules, kind)
        out = {keyword: getattr(r, name) for name, keyword in _COLLECTION_KEYWORDS[kind].items() if r.HasField(name)}
        if kind == "repeated" and r.unique:
            out["uniqueItems"] = True
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
    """Whether the zero value meets type-specific rules ``r`` (case ``kind``)."""
    if kind == "string":
        if r.HasField("const") and r.const != "":
            return False
        if any(r.HasField(n) and getattr(r, n) > 0 for n in ("len", "min_len", "len_bytes", "min_bytes")):
            return False
        if r.HasField("pattern") and re.search(r.pattern, "") is None:
            return False
        if any(r.HasField(n) and getattr(r, n) for n in ("prefix", "suffix", "contains")):
            return False
        if listed(r) and "" not in listed(r):
            return False
        if "" in r.not_in:
            return False
        known = r.WhichOneof("well_known")
        if known == "well_known_regex":
            return bool(r.well_known_regex != 1)
        return known in (None, "uri_ref")
    if kind in NUMERIC_RULES:
        return _sets_allow(r, 0) and _within_bounds(r, 0)
    if kind == "bool":
        return not (r.HasField("const") and r.const)
    if kind == "enum":
        return _sets_allow(r, 0)
    if kind == "bytes":
        return not any(r.HasField(n) and getattr(r, n) > 0 for n in ("len", "min_len"))
    return True


def _sets_allow(r: Any, zero: Any) -> bool:
    """Whether the const, in and not_in of numeric or enum rules ``r`` let ``zero`` through."""
    if r.HasField("const") and r.const != zero:
        return False
    if listed(r) and zero not in listed(r):
        return False
    return zero not in r.not_in


def _within_bounds(r: Any, v: float) -> bool:
    """Whether ``v`` meets the gt/gte/lt/lte of numeric rules ``r`` (a lower
    bound above the upper one means outside the range, as in protovalidate)."""
    low = (r.gt, v > r.gt) if r.HasField("gt") else (r.gte, v >= r.gte) if r.HasField("gte") else None
    high = (r.lt, v < r.lt) if r.HasField("lt") else (r.lte, v <= r.lte) if r.HasField("lte") else None
    if low is not None and high is not None and low[0] > high[0]:
        return bool(low[1] or high[1])
    return all(bool(bound[1]) for bound in (low, high) if bound is not None)


def message_notes(desc: AnyDesc, rules: Any) -> list[tuple[str, str]]:
    """(field JSON name or "", text) for each message-level rule, for the description."""
    out: list[tuple[str, str]] = []
    if rules is None:
        return out
    by_json = {fd.json_name: fd for fd in desc.fields}
    for rule_id, message, expression in cel_rules(rules):
        head = rule_id.split(".", 1)[0]
        fd = desc.fields_by_name.get(head) or by_json.get(head)
        out.append((fd.json_name if fd is not None else "", rule_text(message, expression)))
    for oneof in rules.oneof:
        names = [desc.fields_by_name[f].json_name if f in desc.fields_by_name else f for f in oneof.fields]
        out.append(("", _one_of_note(names, oneof.required)))
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
    translator = Translator(CelScope.message(desc))
    parsed: list[Node] = []
    for _, _, expression in cel_rules(rules):
        try:
            node = parse(expression)
            translator.rule(node)
        except TRANSLATION_ERRORS:
            continue
        parsed.append(node)

    def finite(ref: Node) -> bool:
        return translator.finite_domain(desc.fields_by_name[ref[2]]) is not None

    def is_present(ref: Node) -> bool:
        return desc.fields_by_name[ref[2]].json_name in required

    counts: dict[Node, int] = {}
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
        except TRANSLATION_ERRORS:
            parsed.extend(split)
        else:
            out.append(big)
    rest: list[Schema] = []
    for node in parsed:
        forms = [translator.rule(node)]
        for ref in dict.fromkeys(r for r in translator.fields_in(node) if finite(r)):
            try:
                forms.append(translator.cases(ref, [node], present=is_present(ref)))
            except TRANSLATION_ERRORS:
                continue
        rest.append(min(forms, key=lambda f: len(json.dumps(f))))
    # The small rules first: jsonschema-rs (schemathesis' generator) models the rules within its
    # budget when the large case split comes last, and gives up when it comes first.
    out[:0] = merge_overlapping(rest)
    for oneof in rules.oneof:
        out.extend(_one_of([desc.fields_by_name[f] for f in oneof.fields if f in desc.fields_by_name], oneof.required))
    return out


def oneof_schemas(desc: AnyDesc) -> tuple[list[Schema], list[str]]:
    """``(buf.validate.oneof).required`` on the message's real oneofs."""
    schemas: list[Schema] = []
    notes: list[str] = []
    for oneof in desc.oneofs:
        fds = list(oneof.fields)
        if len(fds) == 1 and oneof.name == "_" + fds[0].name:
            continue  # proto3 optional
        options = oneof.GetOptions()
        required = options.HasExtension(pv.oneof) and options.Extensions[pv.oneof].required
        schemas.extend(_one_of(fds, required))
        notes.append(_one_of_note([fd.json_name for fd in fds], required))
    return schemas, notes


def _one_of(fds: list[AnyField], required: bool) -> list[Schema]:
    """At most one of ``fds`` is set (exactly one, for ``required``)."""
    sets = [has_schema(fd) for fd in fds]
    return at_most_one(sets) + ([{"anyOf": sets}] if required and sets else [])


def _one_of_note(names: list[str], required: bool) -> str:
    return f"{'exactly' if required else 'at most'} one of {', '.join(names)}"
